#!/usr/bin/env bash
# The project's tests, on any machine like CI's: makes sure a Docker engine runs (installing it
# from Debian if needed) as a single-node swarm manager, builds the images locally, installs
# Debian's chromium (for the dashboard's browser test), promtool (Debian's prometheus: the
# metrics test checks a real scrape with it) and testssl.sh (the TLS listener's scan) if missing,
# runs every test, then runs the benchmark harness in its short mode and checks its results are
# well formed (no timing thresholds).
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p lb --test docker).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/check-layers.py >/dev/null
python3 scripts/check-links.py
bash scripts/docker-up-engine.sh
# The Swarm tests (core/tests/swarm.rs) and A-3's Swarm variant need a swarm manager.
bash scripts/swarm-up.sh
bash docker/build-images.sh
# The dashboard's test (core/tests/ui.rs) drives headless Chromium: install Debian's if missing.
if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then
    echo "chromium: installing from Debian"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
fi
if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool: installing prometheus from Debian"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends prometheus >/dev/null
fi

# The TLS tests check certificates with the openssl command line (never linked into lb).
if ! command -v openssl >/dev/null 2>&1; then
    echo "openssl: installing from Debian"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq openssl >/dev/null
fi

# The ACME test (core/tests/acme.rs) runs Debian's pebble, Let's Encrypt's test ACME server.
if ! command -v pebble >/dev/null 2>&1; then
    echo "pebble: installing from Debian"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq pebble >/dev/null
fi

# The TLS listener's scan (core/tests/testssl.rs) runs Debian's testssl.sh.
if ! command -v testssl >/dev/null 2>&1; then
    echo "testssl.sh: installing from Debian"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq testssl.sh >/dev/null
fi

# The HTTP/2 tests (core/tests/h2.rs) run stock clients: curl (with HTTP/2) and nghttp2's
# h2load.
if ! command -v h2load >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    echo "nghttp2-client, curl: installing from Debian"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq nghttp2-client curl >/dev/null
fi

# The WebSocket tests (core/tests/websocket.rs) run the stock Python `websockets` library (servers
# and clients), the gRPC tests (core/tests/grpc.rs) stock `grpcio`, from PyPI in a venv of the
# project's (Debian's python3 refuses a system-wide pip).
if ! target/ws-venv/bin/python3 -c 'import websockets.asyncio.server, grpc, grpc_health.v1' >/dev/null 2>&1; then
    echo "websockets, grpcio: installing from PyPI into target/ws-venv"
    if ! python3 -m venv target/ws-venv >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
        $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv >/dev/null
        python3 -m venv --clear target/ws-venv
    fi
    target/ws-venv/bin/pip install -q 'websockets>=13' grpcio grpcio-health-checking
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The Docker, Swarm, browser, metrics, ACME, testssl, HTTP/2 and WebSocket tests fail instead
# of skipping when the engine, the swarm, the images, Chromium, promtool, pebble, testssl, h2load
# or Python websockets or grpcio are missing.
set +e
LB_REQUIRE_DOCKER=1 LB_REQUIRE_BROWSER=1 LB_REQUIRE_PROMTOOL=1 LB_REQUIRE_PEBBLE=1 LB_REQUIRE_TESTSSL=1 LB_REQUIRE_H2LOAD=1 LB_REQUIRE_WEBSOCKETS=1 LB_REQUIRE_GRPC=1 cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

if [ "$status" -eq 0 ] && [ $# -eq 0 ]; then
    results=$(mktemp)
    bash bench/compare.sh --short --out "$results"
    python3 bench/check.py "$results"
    # The HTTPS benchmark's script keeps working (its numbers are for the full run).
    bash bench/tls.sh --short --out "$results"
    # So does the HTTP/2 benchmark's (about 15 s once lb is built: one round of 20 000 h2load
    # requests per target and one 3 s flood round), its result checked for form.
    bash bench/h2.sh --short --out "$results"
    python3 bench/h2_report.py --check "$results"
    rm -f "$results"
fi

# One closing line with the totals of every `cargo test` target.
passed=$(awk '/^test result:/ { s += $4 } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { s += $6 } END { print s + 0 }' "$log")
echo "tests: $passed passed, $failed failed"
exit "$status"
