#!/usr/bin/env python3
"""Check that a bench/compare.sh result is well formed: every target measured, no errors,
positive rates and latencies, ratios and memory present. No timing thresholds: those are goals
reported by the benchmark, not test assertions."""
import json
import math
import sys

TARGETS = ["direct", "lb", "lb-unbatched", "nginx", "haproxy"]


def check(path):
    with open(path) as f:
        r = json.load(f)
    problems = []
    for t in TARGETS:
        s = r["targets"].get(t)
        if s is None:
            problems.append(f"{t}: not measured")
            continue
        if len(s["rounds"]) != r["parameters"]["rounds"]:
            problems.append(f"{t}: {len(s['rounds'])} rounds, expected {r['parameters']['rounds']}")
        for key in ["rps_median", "p50_ms_median", "p99_ms_median"]:
            if not (isinstance(s[key], (int, float)) and s[key] > 0 and math.isfinite(s[key])):
                problems.append(f"{t}: {key} = {s[key]!r}")
        if s["p99_ms_median"] < s["p50_ms_median"]:
            problems.append(f"{t}: p99 below p50")
        cpu = s.get("proxy_cpu_us_per_request_median")
        if t != "direct" and not (isinstance(cpu, (int, float)) and cpu > 0):
            problems.append(f"{t}: proxy CPU per request = {cpu!r}")
        if not s.get("replica_cpu_us_per_request_median", 0) > 0:
            problems.append(f"{t}: replica CPU per request not measured")
        if s["errors"] != 0:
            problems.append(f"{t}: {s['errors']} errors (non-2xx or socket errors)")
    for key, value in r["ratios"].items():
        if not (value > 0 and math.isfinite(value)):
            problems.append(f"ratio {key} = {value!r}")
    m = r["lb_memory"]
    if not (0 < m["rss_idle_kb"] <= m["rss_peak_kb"]):
        problems.append(f"lb memory: idle {m['rss_idle_kb']} kB, peak {m['rss_peak_kb']} kB")
    return problems


if __name__ == "__main__":
    problems = check(sys.argv[1])
    if problems:
        print("bench harness check FAILED:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print(f"bench harness check: ok ({len(TARGETS)} targets measured, no errors, well-formed results)")
