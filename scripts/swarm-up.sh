#!/usr/bin/env bash
# Make this machine's Docker engine a single-node swarm manager, if it is not part of a swarm
# yet (idempotent; offline). Run after scripts/docker-up-engine.sh. Leaves an existing swarm
# (this node a manager or a worker) as it is.
set -euo pipefail
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
case "$state" in
    active)
        echo "swarm: already active"
        ;;
    inactive)
        # 127.0.0.1: nothing outside this machine joins; no network is needed.
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null
        echo "swarm: initialised (single node, advertised on 127.0.0.1)"
        ;;
    *)
        echo "swarm: the engine's swarm state is '$state'; fix it by hand (docker swarm leave --force?)" >&2
        exit 1
        ;;
esac
