#!/usr/bin/env python3
"""Summarise bench/compare.sh's wrk runs: a table on stdout and JSON in the output file."""
import argparse
import json
import os
import platform
import re
import statistics
import sys

TARGETS = ["direct", "lb", "lb-unbatched", "nginx", "haproxy"]
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse(text, cpu):
    """Requests/s, p50 and p99 (ms), error counts and CPU µs per request from one wrk --latency
    output and the matching CPU ticks (proxy, replicas) compare.sh read from /proc."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    proxy_ticks, replica_ticks = (int(x) for x in cpu.split())
    lat = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        lat[pct] = float(value) * UNITS[unit]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"], "errors": errors,
            "requests": requests,
            "proxy_cpu_us_per_request": proxy_ticks * tick_us / max(requests, 1),
            "replica_cpu_us_per_request": replica_ticks * tick_us / max(requests, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wrk_dir")
    ap.add_argument("out")
    for name in ["mode", "nginx", "haproxy"]:
        ap.add_argument(f"--{name}", required=True)
    for name in ["rounds", "duration", "connections", "threads", "workers",
                 "rss-idle-kb", "rss-peak-kb", "memory-connections"]:
        ap.add_argument(f"--{name}", type=int, required=True)
    a = ap.parse_args()

    runs = {t: [] for t in TARGETS}
    for round_ in range(1, a.rounds + 1):
        for t in TARGETS:
            base = os.path.join(a.wrk_dir, f"{t}.{round_}")
            with open(base + ".txt") as f, open(base + ".cpu") as c:
                runs[t].append(parse(f.read(), c.read()))
    summary = {}
    for t in TARGETS:
        rs = runs[t]
        summary[t] = {
            "rps_median": statistics.median(r["rps"] for r in rs),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "proxy_cpu_us_per_request_median":
                statistics.median(r["proxy_cpu_us_per_request"] for r in rs),
            "replica_cpu_us_per_request_median":
                statistics.median(r["replica_cpu_us_per_request"] for r in rs),
            "rounds": rs,
        }
    faster = max(summary["nginx"]["rps_median"], summary["haproxy"]["rps_median"])
    lower_p99 = min(summary["nginx"]["p99_ms_median"], summary["haproxy"]["p99_ms_median"])
    lb = summary["lb"]
    ratios = {
        "lb_over_nginx_rps": lb["rps_median"] / summary["nginx"]["rps_median"],
        "lb_over_haproxy_rps": lb["rps_median"] / summary["haproxy"]["rps_median"],
        "lb_over_direct_rps": lb["rps_median"] / summary["direct"]["rps_median"],
        "lb_over_faster_peer_rps": lb["rps_median"] / faster,
        "lb_p99_over_lower_peer_p99": lb["p99_ms_median"] / lower_p99,
        "lb_unbatched_over_faster_peer_rps": summary["lb-unbatched"]["rps_median"] / faster,
    }
    result = {
        "mode": a.mode,
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                         if l.startswith("model name")), "unknown"),
        },
        "parameters": {
            "rounds": a.rounds, "duration_s": a.duration, "connections": a.connections,
            "wrk_threads": a.threads, "proxy_workers": a.workers,
        },
        "peers": {"nginx": a.nginx, "haproxy": a.haproxy},
        "targets": summary,
        "ratios": ratios,
        "goals": {
            "lb_rps_at_least_1.2x_faster_peer": ratios["lb_over_faster_peer_rps"] >= 1.2,
            "lb_p99_at_most_lower_peer": ratios["lb_p99_over_lower_peer_p99"] <= 1.0,
            "lb_idle_rss_at_most_30_mb": a.rss_idle_kb <= 30 * 1024,
        },
        "lb_memory": {
            "rss_idle_kb": a.rss_idle_kb,
            "rss_peak_kb": a.rss_peak_kb,
            "peak_under_connections": a.memory_connections,
        },
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)

    print(f"\n{'target':<13} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'proxy CPU':>10} {'replica CPU':>12}  (µs per request)")
    for t in TARGETS:
        s = summary[t]
        print(f"{t:<13} {s['rps_median']:>10.0f} {s['p50_ms_median']:>8.2f} "
              f"{s['p99_ms_median']:>8.2f} {s['errors']:>7} "
              f"{s['proxy_cpu_us_per_request_median']:>10.1f} "
              f"{s['replica_cpu_us_per_request_median']:>12.1f}")
    print()
    for k, v in ratios.items():
        print(f"{k:<34} {v:.2f}")
    print(f"lb RSS idle {a.rss_idle_kb / 1024:.1f} MB, peak {a.rss_peak_kb / 1024:.1f} MB "
          f"under {a.memory_connections} connections")
    print(f"results: {a.out}")


if __name__ == "__main__":
    sys.exit(main())
