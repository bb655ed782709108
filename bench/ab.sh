#!/usr/bin/env bash
# A/B benchmark of the data path: lb built from the working tree ("new") against lb built from a
# git revision ("base", default HEAD~1), each in front of three replicas of its own, measured
# with wrk in alternating rounds (base new base new …) on this machine. Prints req/s, p50, p99
# and CPU µs per request of each, and the ratio new/base of the medians — the number the
# "no slower than the commit before (ratio ≥ 0.97)" rule is about.
#
#   bench/ab.sh                       # base = HEAD~1, 6 rounds × 10 s
#   bench/ab.sh --base 576e9f1 --rounds 4 --duration 5
#   options: --base REV --rounds N --duration S --connections C --threads T --config FILE
#
# --config adds the given TOML (e.g. `[proxy]\npipelining = false`) to both lb configurations.
# The base revision is built in a temporary worktree with its own target directory
# (target/ab-base, kept between runs so a second run builds nothing). Traffic goes only to
# 127.0.0.1. Installs wrk from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=HEAD~1 ROUNDS=6 DURATION=10 CONNECTIONS=64 THREADS=2 EXTRA=
while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --connections) CONNECTIONS=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        --config) EXTRA=$(cat "$2"); shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
# shellcheck source=bench/lib.sh
. bench/lib.sh
need_wrk

rev=$(git rev-parse --short "$BASE")
run=$(mktemp -d)
worktree="$run/base-src"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    done
    git worktree remove --force "$worktree" 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT

echo "== building new (working tree) and base ($rev)"
cargo build --release --quiet -p lb
build_revision "$rev" "$worktree"
declare -A BIN=([new]=target/release/lb [base]=target/ab-base/release/lb)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {
    for _ in $(seq 300); do
        curl -sf -o /dev/null -H 'X-Request-Id: 1' "http://127.0.0.1:$1/home" && return 0
        sleep 0.05
    done
    echo "lb on port $1 did not answer" >&2
    return 1
}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
declare -A PORT PID
for t in base new; do
    mkdir -p "$run/$t"
    {
        for i in 1 2 3; do printf '[[replicas]]\nhostname = "Server %d"\nid = %d\n' "$i" "$i"; done
        printf '%s\n' "$EXTRA"
    } > "$run/$t/lb.toml"
    PORT[$t]=$(free_port)
    RUST_LOG=warn "${BIN[$t]}" --config "$run/$t/lb.toml" --listen "127.0.0.1:${PORT[$t]}" \
        > "$run/$t/out" 2> "$run/$t/err" &
    PID[$t]=$!
    pids+=("${PID[$t]}")
    wait_ready "${PORT[$t]}"
done

ticks() { local s=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$s"; }
for round in $(seq "$ROUNDS"); do
    for t in base new; do
        echo "== round $round/$ROUNDS: $t"
        c0=$(ticks "${PID[$t]}")
        wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency -s bench/request.lua \
            "http://127.0.0.1:${PORT[$t]}" > "$run/$t.$round.txt"
        echo "$(( $(ticks "${PID[$t]}") - c0 ))" > "$run/$t.$round.cpu"
    done
done

python3 - "$run" "$ROUNDS" "$rev" <<'PY'
import os, re, statistics, sys
run, rounds, rev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
res = {}
for t in ("base", "new"):
    rows = []
    for r in range(1, rounds + 1):
        text = open(f"{run}/{t}.{r}.txt").read()
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        n = int(re.search(r"(\d+) requests in", text).group(1))
        lat = {p: float(v) * units[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
        cpu = int(open(f"{run}/{t}.{r}.cpu").read()) * tick_us / max(n, 1)
        rows.append((rps, lat["50"], lat["99"], cpu, int(bad.group(1)) if bad else 0))
    res[t] = rows
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"{t:5} ({'working tree' if t == 'new' else rev}): req/s {med[0]:9.0f}  p50 {med[1]:6.2f} ms  "
          f"p99 {med[2]:6.2f} ms  lb CPU {med[3]:5.1f} µs/req  non-2xx {sum(r[4] for r in rows)}  "
          f"rounds {' '.join(f'{r[0]:.0f}' for r in rows)}")
b = [statistics.median(c) for c in zip(*res["base"])]
n = [statistics.median(c) for c in zip(*res["new"])]
print(f"ratio new/base: req/s {n[0] / b[0]:.3f}  p99 {n[2] / b[2]:.3f}  CPU/req {n[3] / b[3]:.3f}")
PY
