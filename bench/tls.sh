#!/usr/bin/env bash
# HTTPS side by side on this machine: lb, nginx and HAProxy each terminating TLS in front of the
# SAME 3 replicas (lb's), with the same ECDSA P-256 certificate (made by `lb tls self-signed`),
# measured with wrk in alternating rounds (lb nginx haproxy, lb …) in two ways:
#   keep-alive  HTTPS requests on open connections (req/s);
#   handshake   a new TLS connection per request (`Connection: close`, bench/request-close.lua:
#               each proxy closes after its response and wrk connects again), so req/s is
#               handshakes/s. The TLS connections each proxy accepted are counted
#               (lb_tls_handshakes_total, nginx's stub_status, HAProxy's CumSslConns) to show one
#               per request. wrk keeps its session across reconnects (SSL_clear), so these are
#               resumed TLS 1.3 handshakes (PSK with X25519, no certificate signature) with every
#               proxy, as a returning browser's are: checked once with nginx's
#               $ssl_session_reused (1 839 of 1 843 reused) and with perf on lb (no P-256 signing).
# Prints a table (req/s, p50, p99, CPU per request, connections per request), the ratios
# lb / max(nginx, haproxy), and writes it all as JSON under bench/results/.
#
#   bench/tls.sh                 # full: 5 rounds × 10 s per target and mode
#   bench/tls.sh --short         # CI: 1 round × 3 s per target and mode (under 2 minutes)
#   options: --rounds N --duration S --connections C --threads T --out FILE
#            --lb PATH (another lb binary, e.g. one built from an older commit: before/after)
#
# Equal footing, as bench/compare.sh: as many workers (lb's default, nginx's worker_processes,
# HAProxy's nbthread) as cores, keep-alive connections to the replicas, the same hashing job
# (a random 6-digit id in the query and X-Request-Id, bench/request.lua). Every proxy offers TLS
# 1.2 and 1.3 and keeps a session cache shared by its workers; wrk (OpenSSL) negotiates TLS 1.3
# with each, and the negotiated protocol, cipher and group are recorded. Configurations:
# bench/*-tls.*.template. Traffic goes only to 127.0.0.1. Installs nginx, HAProxy, wrk and openssl
# from Debian if missing. Other work on the machine skews single rounds: the load average before
# the run is recorded; compare ratios, not absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=5 DURATION=10 CONNECTIONS=64 THREADS=2 MODE=full OUT= LB=target/release/lb
while [ $# -gt 0 ]; do
    case "$1" in
        --short) MODE=short ROUNDS=1 DURATION=3 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --connections) CONNECTIONS=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --lb) LB=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
WORKERS=$(nproc)
mkdir -p bench/results
OUT=${OUT:-bench/results/tls-$(date -u +%Y%m%dT%H%M%SZ).json}

# shellcheck source=bench/lib.sh
. bench/lib.sh
extra=()
command -v openssl >/dev/null || extra+=(openssl)
bench_install "${extra[@]}"

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average before the run: $LOAD"
echo "== building lb and server (release)"
cargo build --release --quiet -p lb -p server

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
run=$(mktemp -d)
trap bench_cleanup EXIT

# One certificate for all three, checked to be ECDSA P-256.
"$LB" tls self-signed --name localhost --name 127.0.0.1 --out "$run/certs" > /dev/null
CERT=$run/certs/cert.pem KEY=$run/certs/key.pem
CURVE=$(openssl x509 -in "$CERT" -noout -text | awk '/ASN1 OID:/ {print $3; exit}')
[ "$CURVE" = prime256v1 ] || { echo "the certificate's key is not P-256 ($CURVE)" >&2; exit 1; }
cat "$CERT" "$KEY" > "$run/certs/haproxy.pem"

# lb with its three replicas; nginx and HAProxy are pointed at the same replica processes.
LB_PORT=$(free_port) LB_TLS_PORT=$(free_port)
cat > "$run/lb.toml" <<TOML
[tls]
listen = "127.0.0.1:$LB_TLS_PORT"
[[tls.certificates]]
cert = "$CERT"
key = "$KEY"
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
wait_port "$LB_TLS_PORT"
mapfile -t REPLICAS < <(replica_addresses "$LB_PORT")
[ ${#REPLICAS[@]} -eq 3 ] || { echo "lb did not start 3 replicas" >&2; exit 1; }

NGINX_PORT=$(free_port) NGINX_STATUS_PORT=$(free_port) HAPROXY_PORT=$(free_port)
mkdir -p "$run/body" "$run/proxy" "$run/fastcgi" "$run/uwsgi" "$run/scgi"
nginx_backends=$(printf '        server %s;\n' "${REPLICAS[@]}")
haproxy_backends=$(i=0; for a in "${REPLICAS[@]}"; do i=$((i+1)); printf '    server s%d %s\n' "$i" "$a"; done)
fill bench/nginx-tls.conf.template @WORKERS@ "$WORKERS" @PORT@ "$NGINX_PORT" @RUNDIR@ "$run" \
    @BACKENDS@ "$nginx_backends" @CERT@ "$CERT" @KEY@ "$KEY" @STATUS_PORT@ "$NGINX_STATUS_PORT" \
    > "$run/nginx.conf"
fill bench/haproxy-tls.cfg.template @WORKERS@ "$WORKERS" @PORT@ "$HAPROXY_PORT" @RUNDIR@ "$run" \
    @BACKENDS@ "$haproxy_backends" @PEM@ "$run/certs/haproxy.pem" > "$run/haproxy.cfg"
"$NGINX" -c "$run/nginx.conf" -g 'daemon off;' 2> "$run/nginx.err" &
NGINX_PID=$!
pids+=("$NGINX_PID")
"$HAPROXY" -f "$run/haproxy.cfg" -db > "$run/haproxy.out" 2>&1 &
HAPROXY_PID=$!
pids+=("$HAPROXY_PID")
wait_port "$NGINX_PORT"
wait_port "$HAPROXY_PORT"

declare -A PROXY_PIDS=(
    [lb]="$LB_PID"
    [nginx]="$(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
    [haproxy]="$HAPROXY_PID"
)
REPLICA_PIDS="$(replica_pids "$LB_PORT")"
declare -A PORT=([lb]="$LB_TLS_PORT" [nginx]="$NGINX_PORT" [haproxy]="$HAPROXY_PORT")
TARGETS=(lb nginx haproxy)

# TLS connections each proxy accepted so far.
tls_connections() {
    case "$1" in
        lb) curl -s "http://127.0.0.1:$LB_PORT/_lb/metrics" \
                | awk '/^lb_tls_handshakes_total/ {s += $2} END {print s + 0}' ;;
        nginx) curl -s "http://127.0.0.1:$NGINX_STATUS_PORT/" | awk 'NR == 3 {print $1}' ;;
        haproxy) python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show info\n")
text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
print(next(l.split(":")[1].strip() for l in text.splitlines() if l.startswith("CumSslConns:")))' \
                "$run/haproxy.sock" ;;
    esac
}

# Every target answers 200 over HTTPS (the certificate checked against lb's CA), and what wrk's
# OpenSSL negotiates with each.
mkdir -p "$run/wrk"
for t in "${TARGETS[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$run/certs/ca.pem" \
        -H 'X-Request-Id: 123456' "https://127.0.0.1:${PORT[$t]}/home?id=123456")
    [ "$code" = 200 ] || { echo "$t answered $code" >&2; exit 1; }
    openssl s_client -connect "127.0.0.1:${PORT[$t]}" -servername localhost < /dev/null 2> /dev/null \
        | awk '/^New, / {p = $2; c = $5} /Server Temp Key:/ {sub(/.*Key: /, ""); g = $0}
               END {printf "%s %s %s\n", p, c, g}' > "$run/wrk/$t.negotiated"
    echo "$t: $(cat "$run/wrk/$t.negotiated")"
done

declare -A SCRIPT=([keepalive]=bench/request.lua [handshake]=bench/request-close.lua)
for round in $(seq "$ROUNDS"); do
    for mode in keepalive handshake; do
        for t in "${TARGETS[@]}"; do
            echo "== round $round/$ROUNDS: $mode $t"
            # shellcheck disable=SC2086 # pid lists
            proxy0=$(cpu_ticks ${PROXY_PIDS[$t]}) replicas0=$(cpu_ticks $REPLICA_PIDS)
            conns0=$(tls_connections "$t")
            wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency -s "${SCRIPT[$mode]}" \
                "https://127.0.0.1:${PORT[$t]}" > "$run/wrk/$mode-$t.$round.txt"
            # shellcheck disable=SC2086
            echo "$(( $(cpu_ticks ${PROXY_PIDS[$t]}) - proxy0 )) $(( $(cpu_ticks $REPLICA_PIDS) - replicas0 ))" \
                > "$run/wrk/$mode-$t.$round.cpu"
            echo "$(( $(tls_connections "$t") - conns0 ))" > "$run/wrk/$mode-$t.$round.conns"
        done
    done
done

# What wrk negotiated with lb, by version (s_client's answer above is OpenSSL's default; wrk's
# is the same library with the same defaults).
curl -s "http://127.0.0.1:$LB_PORT/_lb/metrics" | sed -n 's/^lb_tls_handshakes_total{version="\(.*\)"} /\1 /p' \
    > "$run/wrk/lb.versions"

python3 bench/tls_report.py "$run/wrk" "$OUT" \
    --mode "$MODE" --rounds "$ROUNDS" --duration "$DURATION" --connections "$CONNECTIONS" \
    --threads "$THREADS" --workers "$WORKERS" --load "$LOAD" --curve "$CURVE" \
    --lb "$([ "$LB" = target/release/lb ] && echo "$LB, built from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core || echo ' with changes')" || echo "$LB")" \
    --nginx "$("$NGINX" -v 2>&1 | head -1)" --haproxy "$("$HAPROXY" -v 2>&1 | head -1)"
