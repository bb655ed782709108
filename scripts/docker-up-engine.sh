#!/usr/bin/env bash
# Make sure a Docker engine answers: install docker.io and docker-compose from Debian if they are
# missing, start containerd and dockerd in the background if no engine answers, and wait for
# `docker info`. Idempotent: does nothing when an engine already answers. Used by CI and developers.
#
# On a brand-new (and busy) machine dockerd's own start of containerd can time out ("failed to
# start containerd: timeout waiting for containerd to start") and dockerd exits. So containerd is
# started first on its own and waited for, and a dockerd that exits before it answers is started
# again (up to DOCKER_UP_ATTEMPTS times) until DOCKER_UP_DEADLINE_SECS have passed.
set -euo pipefail

DEADLINE_SECS=${DOCKER_UP_DEADLINE_SECS:-300}
ATTEMPTS=${DOCKER_UP_ATTEMPTS:-4}
CONTAINERD_SOCK=/run/containerd/containerd.sock

if docker info >/dev/null 2>&1; then
    echo "docker engine: already running ($(docker info --format '{{.ServerVersion}}'))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then
    echo "docker engine: installing docker.io and docker-compose from Debian"
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker.io docker-compose >/dev/null
fi

start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
give_up() {
    echo "docker engine: $1; last lines of /tmp/containerd.log and /tmp/dockerd.log:" >&2
    tail -10 /tmp/containerd.log >&2 2>/dev/null || true
    tail -20 /tmp/dockerd.log >&2 2>/dev/null || true
    exit 1
}

# containerd first, on its own (when the package ships it), so dockerd does not have to start it
# under its own short timeout.
containerd_answers() { [ -S "$CONTAINERD_SOCK" ] && { ! command -v ctr >/dev/null 2>&1 || $SUDO ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }; }
containerd_flag=()
if command -v containerd >/dev/null 2>&1; then
    if ! containerd_answers; then
        echo "docker engine: starting containerd in the background (log: /tmp/containerd.log)"
        $SUDO sh -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
        until containerd_answers; do
            [ "$(elapsed)" -ge "$DEADLINE_SECS" ] && give_up "containerd did not answer after ${DEADLINE_SECS}s"
            sleep 0.5
        done
        echo "docker engine: containerd answers after $(elapsed)s"
    fi
    containerd_flag=(--containerd="$CONTAINERD_SOCK")
fi

dockerd_pid=
dockerd_running() { [ -n "$dockerd_pid" ] && [ -d "/proc/$dockerd_pid" ]; }
# A dockerd running but not answering yet (started by someone else) is waited for, not doubled.
[ -f /var/run/docker.pid ] && [ -d "/proc/$(cat /var/run/docker.pid)" ] && dockerd_pid=$(cat /var/run/docker.pid)
attempt=0
until docker info >/dev/null 2>&1; do
    [ "$(elapsed)" -ge "$DEADLINE_SECS" ] && give_up "no answer after ${DEADLINE_SECS}s"
    if ! dockerd_running; then
        attempt=$((attempt + 1))
        [ "$attempt" -gt "$ATTEMPTS" ] && give_up "dockerd exited $ATTEMPTS times"
        echo "docker engine: starting dockerd in the background, attempt $attempt (log: /tmp/dockerd.log)"
        dockerd_pid=$($SUDO sh -c "nohup dockerd ${containerd_flag[*]} >>/tmp/dockerd.log 2>&1 & echo \$!")
    fi
    sleep 0.5
done
echo "docker engine: running ($(docker info --format '{{.ServerVersion}}'), after $(elapsed)s)"
