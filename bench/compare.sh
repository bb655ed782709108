#!/usr/bin/env bash
# Side-by-side benchmark on this machine: direct to one replica, lb, nginx and HAProxy over the
# same 3 replicas, measured with wrk in alternating rounds (direct lb lb-unbatched nginx haproxy,
# direct lb …).
# Prints a table (req/s, p50, p99, ratios) and writes it as JSON under bench/results/.
#
#   bench/compare.sh                 # full: 5 rounds × 10 s per target, plus lb's memory
#   bench/compare.sh --short         # CI: 1 round × 2 s per target, small memory probe
#   options: --rounds N --duration S --connections C --threads T --out FILE
#
# Equal footing: every proxy gets as many worker threads as the machine has cores, keeps
# connections to the replicas alive, and hashes a per-request key (the same random 6-digit id in
# the query and in X-Request-Id, see bench/request.lua). Configurations: bench/*.template.
# "lb-unbatched" is a second lb with `[proxy] pipelining = false` (a connection per request to
# the replicas, like nginx and HAProxy), over three replicas of its own, to show what batching
# requests to the replicas is worth.
# Traffic goes only to 127.0.0.1. Installs nginx, haproxy and wrk from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=5 DURATION=10 CONNECTIONS=64 THREADS=2 MEMORY_CONNECTIONS=10000 MODE=full OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --short) MODE=short ROUNDS=1 DURATION=2 MEMORY_CONNECTIONS=1000 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --connections) CONNECTIONS=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        --out) OUT=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
WORKERS=$(nproc)
mkdir -p bench/results
OUT=${OUT:-bench/results/compare-$(date -u +%Y%m%dT%H%M%SZ).json}

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_install

echo "== building lb and server (release)"
cargo build --release --quiet -p lb -p server

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
run=$(mktemp -d)
trap bench_cleanup EXIT

# lb with its three replicas; nginx and HAProxy are pointed at the same replica processes.
LB_PORT=$(free_port)
cat > "$run/lb.toml" <<TOML
[[replicas]]
hostname = "Server 1"
id = 1
[[replicas]]
hostname = "Server 2"
id = 2
[[replicas]]
hostname = "Server 3"
id = 3
TOML
RUST_LOG=warn target/release/lb --config "$run/lb.toml" --listen "127.0.0.1:$LB_PORT" > "$run/lb.out" 2> "$run/lb.err" &
LB_PID=$!
pids+=("$LB_PID")
wait_port "$LB_PORT"
LB2_PORT=$(free_port)
mkdir -p "$run/unbatched"
{ cat "$run/lb.toml"; printf '[proxy]\npipelining = false\n'; } > "$run/unbatched/lb.toml"
RUST_LOG=warn target/release/lb --config "$run/unbatched/lb.toml" --listen "127.0.0.1:$LB2_PORT" \
    > "$run/lb-unbatched.out" 2> "$run/lb-unbatched.err" &
LB2_PID=$!
pids+=("$LB2_PID")
wait_port "$LB2_PORT"
mapfile -t REPLICAS < <(replica_addresses "$LB_PORT")
[ ${#REPLICAS[@]} -eq 3 ] || { echo "lb did not start 3 replicas" >&2; exit 1; }

NGINX_PORT=$(free_port) HAPROXY_PORT=$(free_port)
mkdir -p "$run/body" "$run/proxy" "$run/fastcgi" "$run/uwsgi" "$run/scgi"
nginx_backends=$(printf '        server %s;\n' "${REPLICAS[@]}")
haproxy_backends=$(i=0; for a in "${REPLICAS[@]}"; do i=$((i+1)); printf '    server s%d %s\n' "$i" "$a"; done)
fill bench/nginx.conf.template @WORKERS@ "$WORKERS" @PORT@ "$NGINX_PORT" @RUNDIR@ "$run" @BACKENDS@ "$nginx_backends" > "$run/nginx.conf"
fill bench/haproxy.cfg.template @WORKERS@ "$WORKERS" @PORT@ "$HAPROXY_PORT" @RUNDIR@ "$run" @BACKENDS@ "$haproxy_backends" > "$run/haproxy.cfg"
"$NGINX" -c "$run/nginx.conf" -g 'daemon off;' 2> "$run/nginx.err" &
NGINX_PID=$!
pids+=("$NGINX_PID")
"$HAPROXY" -f "$run/haproxy.cfg" -db > "$run/haproxy.out" 2>&1 &
HAPROXY_PID=$!
pids+=("$HAPROXY_PID")
wait_port "$NGINX_PORT"
wait_port "$HAPROXY_PORT"

# CPU time read from /proc around every wrk run (cpu_ticks): the proxy's own processes, and the
# replicas it sends to.
declare -A PROXY_PIDS=(
    [direct]=""
    [lb]="$LB_PID"
    [lb-unbatched]="$LB2_PID"
    [nginx]="$(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
    [haproxy]="$HAPROXY_PID"
)
REPLICA_PIDS="$(replica_pids "$LB_PORT")"
declare -A REPLICAS_OF=(
    [direct]="$REPLICA_PIDS" [lb]="$REPLICA_PIDS" [nginx]="$REPLICA_PIDS"
    [haproxy]="$REPLICA_PIDS" [lb-unbatched]="$(replica_pids "$LB2_PORT")"
)

declare -A URL=(
    [direct]="http://${REPLICAS[0]}"
    [lb]="http://127.0.0.1:$LB_PORT"
    [lb-unbatched]="http://127.0.0.1:$LB2_PORT"
    [nginx]="http://127.0.0.1:$NGINX_PORT"
    [haproxy]="http://127.0.0.1:$HAPROXY_PORT"
)
TARGETS=(direct lb lb-unbatched nginx haproxy)
mkdir -p "$run/wrk"
# Every target answers 200 before anything is measured.
for t in "${TARGETS[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Request-Id: 123456' "${URL[$t]}/home?id=123456")
    [ "$code" = 200 ] || { echo "$t answered $code" >&2; exit 1; }
done

LB_RSS_IDLE_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$LB_PID/status")
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        echo "== round $round/$ROUNDS: $t"
        # shellcheck disable=SC2086 # pid lists
        proxy0=$(cpu_ticks ${PROXY_PIDS[$t]}) replicas0=$(cpu_ticks ${REPLICAS_OF[$t]})
        wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency -s bench/request.lua "${URL[$t]}" \
            > "$run/wrk/$t.$round.txt"
        # shellcheck disable=SC2086
        echo "$(( $(cpu_ticks ${PROXY_PIDS[$t]}) - proxy0 )) $(( $(cpu_ticks ${REPLICAS_OF[$t]}) - replicas0 ))" \
            > "$run/wrk/$t.$round.cpu"
    done
done

echo "== lb memory under $MEMORY_CONNECTIONS connections"
wrk -t "$THREADS" -c "$MEMORY_CONNECTIONS" -d "$((DURATION < 5 ? DURATION : 5))s" --timeout 10s \
    -s bench/request.lua "${URL[lb]}" > "$run/wrk/memory.txt" 2>&1 || true
LB_RSS_PEAK_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$LB_PID/status")

python3 bench/report.py "$run/wrk" "$OUT" \
    --mode "$MODE" --rounds "$ROUNDS" --duration "$DURATION" --connections "$CONNECTIONS" \
    --threads "$THREADS" --workers "$WORKERS" --rss-idle-kb "$LB_RSS_IDLE_KB" \
    --rss-peak-kb "$LB_RSS_PEAK_KB" --memory-connections "$MEMORY_CONNECTIONS" \
    --nginx "$("$NGINX" -v 2>&1 | head -1)" --haproxy "$("$HAPROXY" -v 2>&1 | head -1)"
