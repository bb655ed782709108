#!/usr/bin/env bash
# HTTP/2 side by side on this machine: lb and nginx each taking HTTP/2 from clients with prior
# knowledge (h2c: lb's plain listener, nginx's `listen … http2`) in front of the SAME 3 replicas
# (lb's), HTTP/1.1 with keep-alive to them, measured with nghttp2's h2load in alternating rounds
# (lb nginx lb nginx …): `h2load -n 100000 -c 20 -m 10` (20 connections, 10 streams in flight on
# each). Both hash the same per-request key: 1 000 URIs `/home?id=NNNNNN` (random 6-digit ids)
# that h2load cycles through — lb's `[ring] key = "query:id"`, nginx's `hash $arg_id consistent`.
# Then, unless --no-flood, the hostile run: an HTTP/1.1 client's p99 (wrk --latency) alone, and
# again while another client floods lb with rapid resets (bench/h2_flood.py: HEADERS then
# RST_STREAM, reconnecting after each GOAWAY), alternating quiet and flooded rounds.
# Prints req/s, errors and CPU per request of each, the ratio lb / nginx of the medians, the
# p99 ratio flooded / quiet, and writes it all as JSON under bench/results/.
#
#   bench/h2.sh                 # full: 3 rounds of 100 000 requests per target, 3 flood rounds
#   bench/h2.sh --short         # CI: 1 round of 20 000, 1 flood round of 3 s
#   options: --rounds N --requests N --out FILE --no-flood
#
# Equal footing, as bench/compare.sh: as many workers (lb's default, nginx's worker_processes)
# as cores, keep-alive connections to the replicas. Traffic goes only to 127.0.0.1. Installs
# nginx, wrk and nghttp2-client (h2load) from Debian if missing. Other work on the machine skews
# single rounds: the load average before the run is recorded; compare ratios, not absolutes.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 REQUESTS=100000 MODE=full OUT= FLOOD=1 FLOOD_ROUNDS=3 FLOOD_SECONDS=10
while [ $# -gt 0 ]; do
    case "$1" in
        --short) MODE=short ROUNDS=1 REQUESTS=20000 FLOOD_ROUNDS=1 FLOOD_SECONDS=3 ;;
        --rounds) ROUNDS=$2; shift ;;
        --requests) REQUESTS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-flood) FLOOD=0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
WORKERS=$(nproc)
mkdir -p bench/results
OUT=${OUT:-bench/results/h2-$(date -u +%Y%m%dT%H%M%SZ).json}

# shellcheck source=bench/lib.sh
. bench/lib.sh
extra=()
command -v h2load >/dev/null || extra+=(nghttp2-client)
bench_install "${extra[@]}"
"$NGINX" -V 2>&1 | grep -q http_v2_module || { echo "this nginx has no HTTP/2 module" >&2; exit 1; }

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average before the run: $LOAD"
echo "== building lb and server (release)"
cargo build --release --quiet -p lb -p server
LB=target/release/lb

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
run=$(mktemp -d)
trap bench_cleanup EXIT

LB_PORT=$(free_port)
cat > "$run/lb.toml" <<TOML
[ring]
key = "query:id"
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
RUST_LOG=warn "$LB" --config "$run/lb.toml" --listen "127.0.0.1:$LB_PORT" > "$run/lb.out" 2> "$run/lb.err" &
LB_PID=$!
pids+=("$LB_PID")
wait_port "$LB_PORT"
mapfile -t REPLICAS < <(replica_addresses "$LB_PORT")
[ ${#REPLICAS[@]} -eq 3 ] || { echo "lb did not start 3 replicas" >&2; exit 1; }

NGINX_PORT=$(free_port)
mkdir -p "$run/body" "$run/proxy" "$run/fastcgi" "$run/uwsgi" "$run/scgi"
nginx_backends=$(printf '        server %s;\n' "${REPLICAS[@]}")
fill bench/nginx-h2.conf.template @WORKERS@ "$WORKERS" @PORT@ "$NGINX_PORT" @RUNDIR@ "$run" \
    @BACKENDS@ "$nginx_backends" > "$run/nginx.conf"
"$NGINX" -c "$run/nginx.conf" -g 'daemon off;' 2> "$run/nginx.err" &
NGINX_PID=$!
pids+=("$NGINX_PID")
wait_port "$NGINX_PORT"

declare -A PROXY_PIDS=([lb]="$LB_PID" [nginx]="$(pgrep -P "$NGINX_PID" | tr '\n' ' ')")
REPLICA_PIDS="$(replica_pids "$LB_PORT")"
declare -A PORT=([lb]="$LB_PORT" [nginx]="$NGINX_PORT")
TARGETS=(lb nginx)

# 1 000 URIs with random 6-digit ids, cycled through by h2load.
python3 -c 'import random; [print(f"/home?id={random.randint(100000, 999999)}") for _ in range(1000)]' \
    > "$run/paths"
mkdir -p "$run/h2load"
for t in "${TARGETS[@]}"; do
    sed "s|^|http://127.0.0.1:${PORT[$t]}|" "$run/paths" > "$run/uris.$t"
    version=$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code} %{http_version}' \
        "http://127.0.0.1:${PORT[$t]}/home?id=123456")
    [ "$version" = "200 2" ] || { echo "$t answered '$version' to an h2c request" >&2; exit 1; }
done

for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        echo "== round $round/$ROUNDS: h2load $t"
        # shellcheck disable=SC2086 # pid lists
        proxy0=$(cpu_ticks ${PROXY_PIDS[$t]}) replicas0=$(cpu_ticks $REPLICA_PIDS)
        timeout 300 h2load -n "$REQUESTS" -c 20 -m 10 -i "$run/uris.$t" \
            > "$run/h2load/$t.$round.txt" 2>&1
        # shellcheck disable=SC2086
        echo "$(( $(cpu_ticks ${PROXY_PIDS[$t]}) - proxy0 )) $(( $(cpu_ticks $REPLICA_PIDS) - replicas0 ))" \
            > "$run/h2load/$t.$round.cpu"
        grep -E '^(finished in|requests:)' "$run/h2load/$t.$round.txt" | sed 's/^/   /'
    done
done

if [ "$FLOOD" = 1 ]; then
    mkdir -p "$run/flood"
    for round in $(seq "$FLOOD_ROUNDS"); do
        for phase in quiet flooded; do
            echo "== flood round $round/$FLOOD_ROUNDS: $phase"
            flood_pid=
            if [ "$phase" = flooded ]; then
                python3 bench/h2_flood.py 127.0.0.1 "$LB_PORT" "$((FLOOD_SECONDS + 2))" \
                    > "$run/flood/flood.$round.txt" 2>&1 &
                flood_pid=$!
                pids+=("$flood_pid")
            fi
            wrk -t 1 -c 16 -d "${FLOOD_SECONDS}s" --latency -s bench/request.lua \
                "http://127.0.0.1:$LB_PORT" > "$run/flood/$phase.$round.txt"
            [ -z "$flood_pid" ] || wait "$flood_pid" || true
            grep -E '^ +99%|Requests/sec' "$run/flood/$phase.$round.txt" | sed 's/^/   /'
        done
        cat "$run/flood/flood.$round.txt"
    done
    curl -s "http://127.0.0.1:$LB_PORT/_lb/metrics" | grep -E '^lb_http2_' > "$run/flood/metrics.txt" || true
fi

python3 bench/h2_report.py "$run" "$OUT" --mode "$MODE" --rounds "$ROUNDS" \
    --requests "$REQUESTS" --workers "$WORKERS" --load "$LOAD" \
    --lb "$LB, built from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core || echo ' with changes')" \
    --nginx "$("$NGINX" -v 2>&1 | head -1)" --h2load "$(h2load --version | head -1)"
