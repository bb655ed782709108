# Helpers the side-by-side benchmarks share (bench/compare.sh, bench/tls.sh); sourced, not run.
# The sourcing script sets `run` (its temporary directory) and appends the processes it starts to
# `pids`; `trap bench_cleanup EXIT` stops them and removes `run`.

pids=()

# Install from Debian whichever of nginx, HAProxy, wrk and the packages given are missing.
# RUNLEVEL=1: the packages do not start their system services (nginx on port 80).
bench_install() {
    local missing=("$@")
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]} from Debian"
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
}

# Install wrk from Debian if it is missing (the benchmarks that need nothing else).
need_wrk() {
    if ! command -v wrk >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null
    fi
}

# build_revision REV WORKTREE: lb built from git revision REV, checked out in a temporary
# worktree at WORKTREE, into target/ab-base (kept between runs: a second build is quick).
build_revision() {
    git worktree add --quiet --detach "$2" "$1"
    (cd "$2" && cargo build --release --quiet -p lb --target-dir "$OLDPWD/target/ab-base")
}

# Stop every process in `pids` (TERM, then KILL after 5 s) and remove `run`.
bench_cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$run"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Wait until something listens on 127.0.0.1:$1 (10 s); else show the logs in `run` and fail.
wait_port() {
    for _ in $(seq 200); do
        (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1; logs:" >&2
    ls -la "$run" >&2; for f in "$run"/*.err "$run"/*.out; do echo "-- $f" >&2; tail -5 "$f" >&2; done
    return 1
}

# fill TEMPLATE KEY VALUE…: the template with every KEY replaced by its VALUE, on stdout.
fill() { python3 -c '
import sys
text = open(sys.argv[1]).read()
for key, value in zip(sys.argv[2::2], sys.argv[3::2]): text = text.replace(key, value)
print(text)' "$@"; }

# The addresses of the replicas the lb on port $1 runs, one a line (from /_lb/status).
replica_addresses() { python3 -c '
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_lb/status"))
for r in status["replicas"]: print(r["address"])' "$1"; }

# The pids of the replicas the lb on port $1 runs, space-separated (from /_lb/status: each runs
# under a keeper, `lb keep`, so they are lb's grandchildren, not its children).
replica_pids() { python3 -c '
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_lb/status"))
print(" ".join(str(r["handle"]["pid"]) for r in status["replicas"]))' "$1"; }

# CPU time (user + system, clock ticks) of the processes given, read from /proc.
cpu_ticks() {
    local sum=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] && sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$sum"
}
