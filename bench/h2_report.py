"""Summarize a bench/h2.sh run: h2load's req/s, errors and CPU per request of lb and nginx by
round, the ratio lb / nginx of the medians, and (when the flood ran) an HTTP/1.1 client's p99
alone and during a rapid reset flood. Writes the JSON to OUT and prints a table.

    python3 bench/h2_report.py RUNDIR OUT --mode full --rounds 3 ...
    python3 bench/h2_report.py --check OUT      # a result is well formed (no thresholds)
"""

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

CLK_TCK = 100


def h2load(text: str) -> dict:
    finished = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", text)
    req = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (finished and req and codes):
        raise SystemExit(f"no h2load summary in:\n{text}")
    total, _, done, ok, failed, errored, timeout = map(int, req.groups())
    return {
        "seconds": float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1),
        "req_per_s": float(finished.group(3)),
        "requests": total,
        "done": done,
        "succeeded": ok,
        "failed": failed,
        "errored": errored,
        "timeout": timeout,
        "non_2xx": sum(map(int, codes.groups()[1:])),
    }


def millis(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(text: str) -> dict:
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "p99_ms": millis(p99.group(1)),
        "req_per_s": float(rps.group(1)),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sum(map(int, sockets.groups())) if sockets else 0,
    }


def check(result: dict) -> None:
    for key in ("machine", "rounds", "medians", "ratio_lb_to_nginx"):
        assert key in result, key
    for target in ("lb", "nginx"):
        assert result["medians"][target]["req_per_s"] > 0, target
        assert all(r["done"] == r["requests"] for r in result["rounds"][target]), target


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(json.loads(Path(sys.argv[2]).read_text()))
        print(f"{sys.argv[2]}: well formed")
        return
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("out")
    for name in ("mode", "rounds", "requests", "workers", "load", "lb", "nginx", "h2load"):
        p.add_argument(f"--{name}", required=True)
    a = p.parse_args()
    run = Path(a.run)
    rounds = {}
    for target in ("lb", "nginx"):
        rounds[target] = []
        for n in range(1, int(a.rounds) + 1):
            r = h2load((run / "h2load" / f"{target}.{n}.txt").read_text())
            proxy, replicas = map(int, (run / "h2load" / f"{target}.{n}.cpu").read_text().split())
            r["proxy_cpu_us_per_request"] = proxy / CLK_TCK * 1e6 / max(r["done"], 1)
            r["replica_cpu_us_per_request"] = replicas / CLK_TCK * 1e6 / max(r["done"], 1)
            rounds[target].append(r)
    medians = {
        t: {
            "req_per_s": statistics.median(r["req_per_s"] for r in rs),
            "proxy_cpu_us_per_request": statistics.median(
                r["proxy_cpu_us_per_request"] for r in rs
            ),
            "errors": sum(r["failed"] + r["errored"] + r["timeout"] + r["non_2xx"] for r in rs),
        }
        for t, rs in rounds.items()
    }
    ratio = medians["lb"]["req_per_s"] / medians["nginx"]["req_per_s"]
    result = {
        "machine": {"workers": int(a.workers), "load_before": a.load, "mode": a.mode},
        "tools": {"lb": a.lb, "nginx": a.nginx, "h2load": a.h2load},
        "h2load": f"-n {a.requests} -c 20 -m 10, 1000 URIs /home?id=NNNNNN",
        "rounds": rounds,
        "medians": medians,
        "ratio_lb_to_nginx": round(ratio, 3),
    }
    flood_dir = run / "flood"
    if flood_dir.is_dir():
        quiet = [wrk(p.read_text()) for p in sorted(flood_dir.glob("quiet.*.txt"))]
        flooded = [wrk(p.read_text()) for p in sorted(flood_dir.glob("flooded.*.txt"))]
        floods = [p.read_text().strip() for p in sorted(flood_dir.glob("flood.*.txt"))]
        metrics = (flood_dir / "metrics.txt").read_text() if (flood_dir / "metrics.txt").exists() else ""
        q = statistics.median(r["p99_ms"] for r in quiet)
        f = statistics.median(r["p99_ms"] for r in flooded)
        result["flood"] = {
            "client": "wrk -t 1 -c 16, HTTP/1.1, bench/request.lua",
            "quiet": quiet,
            "flooded": flooded,
            "flooder": floods,
            "p99_ms_quiet": q,
            "p99_ms_flooded": f,
            "p99_ratio_flooded_to_quiet": round(f / q, 3),
            "lb_http2_metrics": metrics.splitlines(),
        }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'':28}{'lb':>12}{'nginx':>12}")
    print(f"{'h2load req/s (median)':28}{medians['lb']['req_per_s']:>12.0f}{medians['nginx']['req_per_s']:>12.0f}")
    print(
        f"{'proxy CPU µs / request':28}{medians['lb']['proxy_cpu_us_per_request']:>12.1f}"
        f"{medians['nginx']['proxy_cpu_us_per_request']:>12.1f}"
    )
    print(f"{'errors (all rounds)':28}{medians['lb']['errors']:>12}{medians['nginx']['errors']:>12}")
    print(f"lb / nginx req/s: {ratio:.2f}x (goal >= 1.2)")
    if "flood" in result:
        fl = result["flood"]
        print(
            f"HTTP/1.1 client p99: {fl['p99_ms_quiet']:.2f} ms quiet, {fl['p99_ms_flooded']:.2f} ms "
            f"during a rapid reset flood: {fl['p99_ratio_flooded_to_quiet']:.2f}x (goal <= 2)"
        )
        for line in fl["flooder"]:
            print(line)
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
