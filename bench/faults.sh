#!/usr/bin/env bash
# What clients see when a replica fails under load, measured with wrk (issue "hard to break"):
#
#   1. kill -9 of the replica owning most of the ring under `wrk -c32` with random request ids;
#   2. the same replica's successor hung with SIGSTOP for 5 s under `wrk -c32 --timeout 5s`.
#
# Prints wrk's own summary of each run (requests, non-2xx answers, socket errors incl. timeouts,
# latency) — the goal is 0 non-2xx and 0 socket errors in both. Uses lb built from the working
# tree with its default settings and three replicas; traffic goes only to 127.0.0.1.
#
#   bench/faults.sh [--duration S]   # default 12 s per run; the fault comes 3 s in
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=12
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$DURATION" -ge 10 ] || { echo "--duration must be at least 10 (the hang lasts 5 s from 3 s in)" >&2; exit 2; }
if ! command -v wrk >/dev/null; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null
fi

run=$(mktemp -d)
lb_pid=
stopped=
cleanup() {
    [ -n "$stopped" ] && kill -CONT "$stopped" 2>/dev/null || true
    if [ -n "$lb_pid" ]; then
        kill "$lb_pid" 2>/dev/null || true
        for _ in $(seq 200); do kill -0 "$lb_pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$lb_pid" 2>/dev/null || true
    fi
    rm -rf "$run"
}
trap cleanup EXIT

cargo build --release --quiet -p lb
for i in 1 2 3; do printf '[[replicas]]\nhostname = "Server %d"\nid = %d\n' "$i" "$i"; done > "$run/lb.toml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
RUST_LOG=warn target/release/lb --config "$run/lb.toml" --listen "127.0.0.1:$port" > "$run/out" 2> "$run/err" &
lb_pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 300); do
    curl -sf -o /dev/null -H 'X-Request-Id: 1' "$url/home" && break
    sleep 0.05
done

# The pid of the replica with server id 1 (84 % of the slots with the assignment's H and Φ).
pid_of_id1() {
    curl -sf "$url/_lb/status" | python3 -c '
import json, sys
status = json.load(sys.stdin)
print(next(r["handle"]["pid"] for r in status["replicas"] if r["id"] == 1))'
}
retries() { curl -sf "$url/_lb/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["retries"])'; }

echo "== kill -9 of the replica with server id 1 (3 s into ${DURATION} s of wrk -c32)"
victim=$(pid_of_id1)
before=$(retries)
wrk -t2 -c32 -d"${DURATION}s" --latency -s bench/request.lua "$url" > "$run/kill.txt" &
wrk_pid=$!
sleep 3
kill -9 "$victim"
wait "$wrk_pid"
cat "$run/kill.txt"
echo "retried by lb: $(( $(retries) - before ))"

# Wait until the replacement is in the ring.
for _ in $(seq 200); do
    now=$(pid_of_id1 2>/dev/null || true)
    [ -n "$now" ] && [ "$now" != "$victim" ] && break
    sleep 0.05
done

echo
echo "== SIGSTOP of the replica with server id 1 for 5 s (3 s into ${DURATION} s of wrk -c32 --timeout 5s)"
victim=$(pid_of_id1)
before=$(retries)
wrk -t2 -c32 -d"${DURATION}s" --timeout 5s --latency -s bench/request.lua "$url" > "$run/hang.txt" &
wrk_pid=$!
sleep 3
kill -STOP "$victim"
stopped=$victim
sleep 5
kill -CONT "$victim" 2>/dev/null || true  # lb may have stopped it already
stopped=
wait "$wrk_pid"
cat "$run/hang.txt"
echo "retried by lb: $(( $(retries) - before ))"
grep -E "WARN|ERROR" "$run/err" | cut -c1-200 | sort | uniq -c | sort -rn | head -5 || true
