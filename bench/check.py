#!/usr/bin/env python3
"""Check that a bench/compare.sh result is well formed: every target measured, no errors,
positive rates and latencies, ratios and memory present. No timing thresholds: those are goals
reported by the benchmark, not test assertions."""
import json
import math
import sys

TARGETS = ["direct", "lb", "nginx", "haproxy"]


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
    print("bench harness check: ok (4 targets measured, no errors, well-formed results)")
