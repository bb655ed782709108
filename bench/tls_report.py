#!/usr/bin/env python3
"""Summarise bench/tls.sh's wrk runs: a table on stdout and JSON in the output file.

`bench/tls_report.py --check FILE` checks a result is well formed (every target and mode
measured, no errors, one TLS connection per request in the handshake mode); no timing
thresholds: the goals are reported, not asserted."""
import argparse
import json
import math
import os
import platform
import statistics
import sys

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing report.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import parse  # noqa: E402  (bench/compare.sh's parser of one wrk run)

TARGETS = ["lb", "nginx", "haproxy"]
MODES = ["keepalive", "handshake"]


def summarise(wrk_dir, rounds):
    """Per mode and target: the medians over the rounds, and the rounds themselves."""
    out = {}
    for mode in MODES:
        out[mode] = {}
        for t in TARGETS:
            rs = []
            for round_ in range(1, rounds + 1):
                base = os.path.join(wrk_dir, f"{mode}-{t}.{round_}")
                with open(base + ".txt") as f, open(base + ".cpu") as c:
                    r = parse(f.read(), c.read())
                with open(base + ".conns") as n:
                    r["tls_connections"] = int(n.read())
                r["tls_connections_per_request"] = r["tls_connections"] / max(r["requests"], 1)
                rs.append(r)
            out[mode][t] = {
                "rps_median": statistics.median(r["rps"] for r in rs),
                "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
                "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
                "proxy_cpu_us_per_request_median":
                    statistics.median(r["proxy_cpu_us_per_request"] for r in rs),
                "replica_cpu_us_per_request_median":
                    statistics.median(r["replica_cpu_us_per_request"] for r in rs),
                "tls_connections_per_request_median":
                    statistics.median(r["tls_connections_per_request"] for r in rs),
                "rounds": rs,
            }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wrk_dir")
    ap.add_argument("out")
    for name in ["mode", "nginx", "haproxy", "load", "curve", "lb"]:
        ap.add_argument(f"--{name}", required=True)
    for name in ["rounds", "duration", "connections", "threads", "workers"]:
        ap.add_argument(f"--{name}", type=int, required=True)
    a = ap.parse_args()

    summary = summarise(a.wrk_dir, a.rounds)
    ratios = {}
    for mode in MODES:
        s = summary[mode]
        faster = max(s["nginx"]["rps_median"], s["haproxy"]["rps_median"])
        ratios[f"{mode}_lb_over_nginx_rps"] = s["lb"]["rps_median"] / s["nginx"]["rps_median"]
        ratios[f"{mode}_lb_over_haproxy_rps"] = s["lb"]["rps_median"] / s["haproxy"]["rps_median"]
        ratios[f"{mode}_lb_over_faster_peer_rps"] = s["lb"]["rps_median"] / faster
        leaner = min(s["nginx"]["proxy_cpu_us_per_request_median"],
                     s["haproxy"]["proxy_cpu_us_per_request_median"])
        ratios[f"{mode}_lb_cpu_over_leaner_peer"] = (
            s["lb"]["proxy_cpu_us_per_request_median"] / leaner)
    negotiated = {}
    for t in TARGETS:
        with open(os.path.join(a.wrk_dir, f"{t}.negotiated")) as f:
            negotiated[t] = f.read().strip()
    with open(os.path.join(a.wrk_dir, "lb.versions")) as f:
        lb_versions = {v: int(n) for v, n in (l.split() for l in f if l.strip())}
    result = {
        "mode": a.mode,
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                         if l.startswith("model name")), "unknown"),
            "load_average_before": a.load,
        },
        "parameters": {
            "rounds": a.rounds, "duration_s": a.duration, "connections": a.connections,
            "wrk_threads": a.threads, "proxy_workers": a.workers,
        },
        "certificate": f"ECDSA {a.curve} (lb tls self-signed), the same for all",
        "negotiated": negotiated,
        "lb_handshakes_by_version": lb_versions,
        "lb": a.lb,
        "peers": {"nginx": a.nginx, "haproxy": a.haproxy},
        "targets": summary,
        "ratios": ratios,
        "goals": {
            "keepalive_lb_rps_at_least_1.2x_faster_peer":
                ratios["keepalive_lb_over_faster_peer_rps"] >= 1.2,
            "handshake_lb_rps_at_least_1.0x_faster_peer":
                ratios["handshake_lb_over_faster_peer_rps"] >= 1.0,
        },
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)

    print(f"\nload average before: {a.load}; certificate ECDSA {a.curve}; "
          f"lb's handshakes by version {lb_versions}")
    for t in TARGETS:
        print(f"{t:<8} negotiated {negotiated[t]}")
    for mode in MODES:
        print(f"\n{mode:<10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
              f"{'proxy CPU':>10} {'replica CPU':>12} {'TLS conns':>10}")
        print(f"{'':<10} {'':>10} {'':>8} {'':>8} {'':>7} {'µs/req':>10} {'µs/req':>12} "
              f"{'per req':>10}")
        for t in TARGETS:
            s = summary[mode][t]
            print(f"{t:<10} {s['rps_median']:>10.0f} {s['p50_ms_median']:>8.2f} "
                  f"{s['p99_ms_median']:>8.2f} {s['errors']:>7} "
                  f"{s['proxy_cpu_us_per_request_median']:>10.1f} "
                  f"{s['replica_cpu_us_per_request_median']:>12.1f} "
                  f"{s['tls_connections_per_request_median']:>10.3f}")
        rounds = "  ".join(
            f"{t} " + " ".join(f"{r['rps']:.0f}" for r in summary[mode][t]["rounds"])
            for t in TARGETS)
        print(f"rounds: {rounds}")
    print()
    for k, v in ratios.items():
        print(f"{k:<38} {v:.2f}")
    print(f"results: {a.out}")


def check(path):
    """Problems with a bench/tls.sh result (an empty list when it is well formed)."""
    with open(path) as f:
        r = json.load(f)
    problems = []
    for mode in MODES:
        for t in TARGETS:
            s = r["targets"].get(mode, {}).get(t)
            if s is None:
                problems.append(f"{mode} {t}: not measured")
                continue
            for key in ["rps_median", "p50_ms_median", "p99_ms_median",
                        "proxy_cpu_us_per_request_median"]:
                if not (isinstance(s[key], (int, float)) and s[key] > 0 and math.isfinite(s[key])):
                    problems.append(f"{mode} {t}: {key} = {s[key]!r}")
            if s["errors"] != 0:
                problems.append(f"{mode} {t}: {s['errors']} errors")
            per = s["tls_connections_per_request_median"]
            if mode == "handshake" and not 0.9 <= per <= 1.1:
                problems.append(f"handshake {t}: {per:.3f} TLS connections per request, not 1")
    for t in TARGETS:
        if not r["negotiated"].get(t, "").startswith("TLSv1.3"):
            problems.append(f"{t}: negotiated {r['negotiated'].get(t)!r}, not TLS 1.3")
    if r["lb_handshakes_by_version"].get("1.2", 0) != 0:
        problems.append(f"wrk negotiated TLS 1.2 with lb: {r['lb_handshakes_by_version']}")
    for key, value in r["ratios"].items():
        if not (value > 0 and math.isfinite(value)):
            problems.append(f"ratio {key} = {value!r}")
    return problems


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        found = check(sys.argv[2])
        if found:
            print("tls bench check FAILED:\n  " + "\n  ".join(found))
            sys.exit(1)
        print("tls bench check: ok (3 targets × 2 modes measured, no errors, one TLS "
              "connection per request when reconnecting, TLS 1.3)")
        sys.exit(0)
    sys.exit(main())
