#!/usr/bin/env bash
# Never restart, measured (issue "every setting live, listeners moved, the binary upgraded under
# load"): lb from the working tree and lb from another commit (--other REV, default HEAD; it must
# know binary upgrades) are built, then bench/never_restart.py runs wrk -c64 with random request
# ids against one lb while it takes 20 saves of formerly restart-only settings, 3 moves of its
# admin listener and 3 binary upgrades (other, working tree, other), and checks: 0 non-2xx, 0
# socket errors, the same replica processes. Results: bench/results/never-restart-TIME.json.
#
#   bench/never_restart.sh [--other REV] [--seconds S]
#
# Traffic goes only to 127.0.0.1. Installs wrk from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

OTHER=HEAD SECONDS_=60
while [ $# -gt 0 ]; do
    case "$1" in
        --other) OTHER=$2; shift ;;
        --seconds) SECONDS_=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
# shellcheck source=bench/lib.sh
. bench/lib.sh
need_wrk
rev=$(git rev-parse --short "$OTHER")
run=$(mktemp -d)
worktree="$run/other-src"
cleanup() {
    git worktree remove --force "$worktree" 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT

echo "== building the working tree and $rev"
cargo build --release --quiet -p lb
build_revision "$rev" "$worktree"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p bench/results "$run/lb"
out="bench/results/never-restart-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 bench/never_restart.py --lb target/release/lb --other target/ab-base/release/lb \
    --run "$run/lb" --out "$out" --seconds "$SECONDS_"
echo "results: $out"
