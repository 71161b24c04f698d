#!/usr/bin/env bash
# Builds a ccfan worker image from local files only (no registry needed): a Debian bookworm root filesystem made by
# mmdebstrap with git, imported as the base once, then the repository's Containerfile adds the ccfan binary.
# Usage: scripts/worker-image.sh [TAG] [CCFAN_BINARY]   (defaults: localhost/ccfan-worker:dev, target/debug/ccfan)
# Needs: podman, mmdebstrap (Debian: apt-get install -y podman runc mmdebstrap); run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/ccfan-worker:dev}
binary=${2:-target/debug/ccfan}
base=localhost/ccfan-worker-base:bookworm
if ! podman image exists "$base"; then
  scratch=$(mktemp -d)
  mmdebstrap --quiet --variant=apt --include=git,ca-certificates bookworm "$scratch/rootfs.tar"
  podman import --quiet --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$scratch/rootfs.tar" "$base" >/dev/null
  rm -rf "$scratch"
fi
context=$(mktemp -d)
cp "$binary" "$context/ccfan"
cp Containerfile "$context/Containerfile"
podman build --quiet --build-arg BASE="$base" -t "$tag" "$context" >/dev/null
rm -rf "$context"
echo "$tag"
