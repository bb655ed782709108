#!/usr/bin/env bash
# gRPC unary calls per second through lb vs straight to the server, same run, side by side: ONE
# stock grpcio server (config/examples/grpc_server.py, `demo.Shard/Who`), called by nghttp2's
# h2load (h2c, `-c 4 -m 10`: 4 connections, 10 calls in flight on each; each call a POST with
# `content-type: application/grpc`, `te: trailers`, an `x-shard` header and a framed empty
# message) in alternating rounds (direct lb direct lb …) of SECONDS each. lb fronts that one
# server by address with `protocol = "h2c"`, so the ratio lb / direct of the median req/s is what
# lb costs (issue 27's goal: ≥ 0.6). Both go straight to the grpcio server's own port (no relay
# on either path); lb health-checks it there with `[health] kind = "grpc"` (the stock
# grpc.health.v1 servicer).
#
#   bench/grpc.sh                 # 3 rounds of 10 s per target
#   bench/grpc.sh --short         # CI: 1 round of 3 s
#   options: --rounds N --seconds S --out FILE
#
# Needs target/ws-venv with grpcio (scripts/test.sh makes it) and h2load (nghttp2-client,
# installed from Debian if missing). Traffic goes only to 127.0.0.1. Other work on the machine
# skews single rounds: the load average before the run is recorded; compare ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 SECONDS_EACH=10 MODE=full OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --short) MODE=short ROUNDS=1 SECONDS_EACH=3 ;;
        --rounds) ROUNDS=$2; shift ;;
        --seconds) SECONDS_EACH=$2; shift ;;
        --out) OUT=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p bench/results
OUT=${OUT:-bench/results/grpc-$(date -u +%Y%m%dT%H%M%SZ).json}
PY=target/ws-venv/bin/python3
"$PY" -c 'import grpc, grpc_health.v1' 2>/dev/null || {
    echo "no grpcio in target/ws-venv: run scripts/test.sh (or: python3 -m venv target/ws-venv && target/ws-venv/bin/pip install grpcio grpcio-health-checking)" >&2
    exit 1
}

# shellcheck source=bench/lib.sh
. bench/lib.sh
extra=()
command -v h2load >/dev/null || extra+=(nghttp2-client)
bench_install "${extra[@]}"

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average before the run: $LOAD"
echo "== building lb (release)"
cargo build --release --quiet -p lb
LB=target/release/lb

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
run=$(mktemp -d)
trap bench_cleanup EXIT

SERVER_PORT=$(free_port)
"$PY" config/examples/grpc_server.py serve --name bench --port "$SERVER_PORT" > "$run/server.out" 2> "$run/server.err" &
SERVER_PID=$!
pids+=("$SERVER_PID")
wait_port "$SERVER_PORT"

LB_PORT=$(free_port)
cat > "$run/lb.toml" <<TOML
[ring]
key = "header:x-shard"
[health]
kind = "grpc"
interval_ms = 500
rise = 1
[[replicas]]
hostname = "bench"
id = 1
address = "127.0.0.1:$SERVER_PORT"
protocol = "h2c"
TOML
RUST_LOG=warn "$LB" --config "$run/lb.toml" --listen "127.0.0.1:$LB_PORT" > "$run/lb.out" 2> "$run/lb.err" &
LB_PID=$!
pids+=("$LB_PID")
wait_port "$LB_PORT"
for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$LB_PORT/_lb/status" | python3 -c \
        'import json, sys; sys.exit(any(r["health"] == "up" for r in json.load(sys.stdin)["replicas"]) == False)' \
        && break
    sleep 0.1
done

declare -A PORT=([direct]="$SERVER_PORT" [lb]="$LB_PORT")
TARGETS=(direct lb)
printf '\0\0\0\0\0' > "$run/empty.grpc"   # one gRPC message: not compressed, 0 bytes
for t in "${TARGETS[@]}"; do
    # One call each way first: a gRPC answer (HTTP 200 with grpc-status 0 in the trailers).
    answer=$(curl -s --http2-prior-knowledge --max-time 10 -o /dev/null -w '%{http_code}' \
        -H 'content-type: application/grpc' -H 'te: trailers' -H 'x-shard: a' \
        --data-binary @"$run/empty.grpc" "http://127.0.0.1:${PORT[$t]}/demo.Shard/Who")
    [ "$answer" = 200 ] || { echo "$t answered $answer to a gRPC call" >&2; exit 1; }
done

mkdir -p "$run/h2load"
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        echo "== round $round/$ROUNDS: h2load $t"
        timeout $((SECONDS_EACH + 60)) h2load -D "$SECONDS_EACH" -c 4 -m 10 \
            -H 'content-type: application/grpc' -H 'te: trailers' -H 'x-shard: tenant-1' \
            -d "$run/empty.grpc" "http://127.0.0.1:${PORT[$t]}/demo.Shard/Who" \
            > "$run/h2load/$t.$round.txt" 2>&1 || true
        grep -E '^(finished in|requests:)' "$run/h2load/$t.$round.txt" | sed 's/^/   /'
    done
done

python3 - "$run" "$OUT" "$MODE" "$ROUNDS" "$SECONDS_EACH" "$LOAD" \
    "$LB, built from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core || echo ' with changes')" \
    "$("$PY" -c 'import grpc; print("grpcio", grpc.__version__)')" "$(h2load --version | head -1)" <<'PY'
import json, re, statistics, sys
run, out, mode, rounds, seconds, load, lb, grpcio, h2load = sys.argv[1:]
result = {"mode": mode, "rounds": int(rounds), "seconds": int(seconds), "load_before": load,
          "lb": lb, "server": grpcio, "client": h2load, "goal": 0.6}
for t in ("direct", "lb"):
    rates, failed = [], 0
    for r in range(1, int(rounds) + 1):
        text = open(f"{run}/h2load/{t}.{r}.txt").read()
        m = re.search(r"finished in [^,]+, ([\d.]+) req/s", text)
        rates.append(float(m.group(1)) if m else 0.0)
        m = re.search(r"requests: .*?(\d+) failed, (\d+) errored", text)
        failed += int(m.group(1)) + int(m.group(2)) if m else 0
    result[t + "_req_s"] = rates
    result[t + "_median"] = statistics.median(rates)
    result[t + "_failed"] = failed
result["ratio"] = round(result["lb_median"] / result["direct_median"], 3) if result["direct_median"] else 0
json.dump(result, open(out, "w"), indent=2)
print(f"== gRPC unary calls/s (median of {rounds}): direct {result['direct_median']:.0f}, "
      f"through lb {result['lb_median']:.0f}: ratio {result['ratio']} (goal >= 0.6); "
      f"failed or errored: direct {result['direct_failed']}, lb {result['lb_failed']}")
print(f"== written {out}")
PY
