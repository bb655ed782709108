#!/usr/bin/env bash
# Build the binaries on this machine and the two images locally — nothing is pulled:
#   lb-replica:latest  FROM scratch: the static `server` binary
#   lb:latest          FROM scratch: `lb`, the hash plugins, the glibc libraries they link
# Needs a running engine (scripts/docker-up-engine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
PLUGINS=(spec spec-misread murmur3 splitmix64 xxh3 fnv1a ketama)

echo "== building the static replica binary"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet --target "$TARGET" -p server
echo "== building lb and the plugins"
cargo build --release --quiet -p lb $(printf -- '-p lb-hash-%s ' "${PLUGINS[@]}")

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# Replica image.
mkdir -p "$ctx/replica"
cp "target/$TARGET/release/server" "$ctx/replica/server"
strip "$ctx/replica/server"
cp docker/Dockerfile.replica "$ctx/replica/Dockerfile"
docker build --quiet -t lb-replica:latest "$ctx/replica" >/dev/null

# LB image: a root with the binary, the plugins, the config and every shared library they need.
root="$ctx/lb/rootfs"
mkdir -p "$root/usr/local/bin" "$root/usr/local/lib/lb/plugins" "$root/etc/lb" "$root/var/lib/lb" "$root/tmp"
cp target/release/lb "$root/usr/local/bin/lb"
strip "$root/usr/local/bin/lb"
for name in "${PLUGINS[@]}"; do
    cp "target/release/liblb_hash_${name//-/_}.so" "$root/usr/local/lib/lb/plugins/"
done
strip --strip-unneeded "$root"/usr/local/lib/lb/plugins/*.so
cp config/lb.docker.toml "$root/etc/lb/lb.docker.toml"
for binary in "$root/usr/local/bin/lb" "$root"/usr/local/lib/lb/plugins/*.so; do
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)"
    ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# The system's certificate authorities, for TLS to backends without a `ca` of their own
# (`tls = true`): a scratch image has none.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
else
    echo "warning: /etc/ssl/certs/ca-certificates.crt missing: lb:latest gets no system roots" >&2
fi
cp docker/Dockerfile.lb "$ctx/lb/Dockerfile"
docker build --quiet -t lb:latest "$ctx/lb" >/dev/null

docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^(lb|lb-replica):latest'
