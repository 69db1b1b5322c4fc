#!/usr/bin/env bash
# Run every test of the cloudmount workspace: unit tests, the WebDAV client tests and the real FUSE mounts
# (tests/fuse_read.rs) against the in-process WebDAV server and Apache, and the fake Graph server's own tests
# (crates/fake-graph).
#
#   scripts/test.sh                 everything
#   scripts/test.sh FILTER...       only tests whose name contains FILTER (passed to the test binaries)
#
# Needs root and /dev/fuse for the FUSE tests (they fail, not skip, without them). Installs fuse3, apache2,
# apache2-utils and curl first if they are missing (scripts/install-test-deps.sh).
#
# --no-fail-fast: a failing test binary does not hide the results of the others.
# Test threads are capped at 2 (override with TEST_THREADS): each FUSE test runs a daemon and a server and moves
# up to 256 MiB, and the reference machine has 2 cores. The whole run is killed after $TEST_TIMEOUT (default 25m)
# as a last resort; every test also bounds its own waits.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

threads=${TEST_THREADS:-2}
limit=${TEST_TIMEOUT:-25m}
echo "test.sh: cargo test --workspace --all-targets --no-fail-fast -- --test-threads=$threads $*"
exec timeout --kill-after=30s "$limit" cargo test --workspace --all-targets --no-fail-fast -- --test-threads="$threads" "$@"
