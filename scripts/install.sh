#!/usr/bin/env bash
# Build cloudmount and install it so that `mount -t fuse.cloudmount` and /etc/fstab entries work:
#
#   scripts/install.sh [--prefix DIR]
#
# copies the release binary to DIR/usr/local/bin/cloudmount, links DIR/sbin/mount.fuse.cloudmount to
# /usr/local/bin/cloudmount and writes the man pages (DIR defaults to /; needs root there). The work is done by
# `cloudmount install`; `cloudmount uninstall [--prefix DIR]` takes it away again.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$repo/Cargo.toml" --bin cloudmount
exec "$repo/target/release/cloudmount" install "$@"
