#!/usr/bin/env bash
# Fuzz lb's parsers (fuzz/, cargo-fuzz on stable with --sanitizer none): each target in turn for
# SECONDS (default 600), then one line per target with the inputs it ran; exit status 1 when a
# target found a crash (a panic: a broken property of lb::fuzzing, or a bug), whose input is
# then in fuzz/artifacts/TARGET/.
#
#   bench/fuzz.sh                  # every target, 600 s each (one at a time)
#   bench/fuzz.sh 60 config key    # these targets, 60 s each
#   bench/fuzz.sh --smoke          # every target for 20 s: a check that fits CI
#
# Targets: framing (a response head and its body's framing), chunked (the chunked decoder, whole
# and in pieces), config (what `lb check` runs on an lb.toml), key (a [ring] key rule and the id
# it reads from a request). The seeds are fuzz/corpus/TARGET/ and the fixed crashes
# fuzz/regressions/TARGET/ (both replayed by `cargo test -p lb --lib fuzzing`); what a run adds
# goes to fuzz/work/TARGET/ (not tracked; delete it to start over), logs to fuzz/logs/.
# Installs cargo-fuzz from crates.io if missing. The targets are built once, then run as built
# (editing the sources meanwhile does not disturb a run); by hand, one target is
# `cargo fuzz run TARGET --sanitizer none -- -max_total_time=SECONDS`.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=600
TARGETS=()
for arg in "$@"; do
    case "$arg" in
        --smoke) SECONDS_EACH=20 ;;
        ''|*[!0-9]*) TARGETS+=("$arg") ;;
        *) SECONDS_EACH=$arg ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(framing chunked config key)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

# One build of every target, so that all of them run the same sources.
echo "fuzz: building the targets" >&2
cargo fuzz build --sanitizer none
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN=fuzz/target/$TRIPLE/release

# Longest input per target: a head may exceed the client's 64 KiB limit, a file is checked whole.
max_len() {
    case "$1" in
        framing) echo 70000 ;;
        config) echo 65536 ;;
        *) echo 16384 ;;
    esac
}

mkdir -p fuzz/logs
failed=0
summary=()
for target in "${TARGETS[@]}"; do
    mkdir -p "fuzz/work/$target" "fuzz/artifacts/$target" "fuzz/regressions/$target"
    log=fuzz/logs/$target.log
    echo "fuzz: $target for ${SECONDS_EACH}s (log: $log)" >&2
    status=0
    "$BIN/$target" -max_total_time="$SECONDS_EACH" -timeout=20 -max_len="$(max_len "$target")" \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" \
        "fuzz/work/$target" "fuzz/corpus/$target" "fuzz/regressions/$target" \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9]*\).*DONE.*/\1/p' "$log" | tail -1)
    if [ "$status" -ne 0 ]; then
        failed=1
        crash=$(ls -t "fuzz/artifacts/$target" 2>/dev/null | head -1)
        summary+=("$target: FAILED (exit $status) after ${runs:-?} runs; input: fuzz/artifacts/$target/$crash")
        tail -30 "$log" >&2
    else
        summary+=("$target: ok, ${runs:-?} runs in ${SECONDS_EACH}s")
    fi
done
printf '%s\n' "${summary[@]}"
exit "$failed"
