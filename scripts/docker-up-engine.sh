#!/usr/bin/env bash
# Make sure a Docker engine answers: install docker.io and docker-compose from Debian if they are
# missing, start dockerd in the background if no engine answers, and wait for `docker info`.
# Idempotent: does nothing when an engine already answers. Used by CI and developers.
set -euo pipefail

DEADLINE_SECS=${DOCKER_UP_DEADLINE_SECS:-90}

if docker info >/dev/null 2>&1; then
    echo "docker engine: already running ($(docker info --format '{{.ServerVersion}}'))"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then
    echo "docker engine: installing docker.io and docker-compose from Debian"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker.io docker-compose >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    echo "docker engine: starting dockerd in the background (log: /tmp/dockerd.log)"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO sh -c 'nohup dockerd >/tmp/dockerd.log 2>&1 &'
fi

start=$(date +%s)
until docker info >/dev/null 2>&1; do
    if [ $(( $(date +%s) - start )) -ge "$DEADLINE_SECS" ]; then
        echo "docker engine: no answer after ${DEADLINE_SECS}s; last lines of /tmp/dockerd.log:" >&2
        tail -20 /tmp/dockerd.log >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "docker engine: running ($(docker info --format '{{.ServerVersion}}'))"
