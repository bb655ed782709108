#!/usr/bin/env bash
# The project's tests, on any machine like CI's: makes sure a Docker engine runs (installing it
# from Debian if needed), builds the images locally, then runs every test. Extra arguments go to
# `cargo test` (e.g. scripts/test.sh -p lb --test docker).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/docker-up-engine.sh
bash docker/build-images.sh
# The Docker tests fail instead of skipping when the engine or the images are missing.
LB_REQUIRE_DOCKER=1 cargo test --workspace "$@"
