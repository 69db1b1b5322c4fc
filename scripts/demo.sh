#!/usr/bin/env bash
# Try cloudmount without any account: a local WebDAV server (Apache mod_dav on 127.0.0.1) with a few sample files,
# mounted as a folder.
#
#   scripts/demo.sh [MOUNTPOINT]     start the server, build cloudmount (release), mount (default /tmp/cloudmount-demo)
#   scripts/demo.sh stop [MOUNTPOINT] unmount and stop the server
#
# Environment: DEMO_PORT (default 8765), DEMO_DATA (served folder, default /tmp/cloudmount-demo-data),
# DEMO_STATE (server config, pid and logs, and cloudmount's log; default /tmp/cloudmount-demo-state),
# CLOUDMOUNT_BIN (use this binary instead of building target/release/cloudmount).
# Needs root or sudo only to install missing packages (fuse3, apache2, apache2-utils, curl).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${DEMO_PORT:-8765}
DATA=${DEMO_DATA:-/tmp/cloudmount-demo-data}
STATE=${DEMO_STATE:-/tmp/cloudmount-demo-state}
BIN=${CLOUDMOUNT_BIN:-target/release/cloudmount}
DEFAULT_MNT=/tmp/cloudmount-demo
servers() { STATE_DIR=$STATE scripts/webdav-servers.sh "$@"; }
is_mounted() { grep -qF " $1 " /proc/self/mountinfo; }

# Sample content: a text file, a folder with a few files, and a ~50 MiB file to see streaming and range reads.
make_samples() {
  mkdir -p "$DATA/photos" "$DATA/notes"
  cat >"$DATA/hello.txt" <<TXT
Hello from cloudmount!
This file lives in $DATA and is served over WebDAV by Apache on 127.0.0.1:$PORT.
TXT
  for i in 1 2 3; do printf 'note %s\n' "$i" >"$DATA/notes/note $i.txt"; done
  for i in 1 2 3 4; do head -c $((200000 + i * 1000)) /dev/urandom >"$DATA/photos/photo-$i.jpg"; done
  [[ -s $DATA/big.bin ]] || head -c $((50 * 1024 * 1024)) /dev/urandom >"$DATA/big.bin"
  chmod -R a+rX "$DATA"
}

start() {
  local mnt=$1
  scripts/install-test-deps.sh
  mkdir -p "$STATE" "$mnt"
  chmod 755 "$STATE"
  if is_mounted "$mnt"; then
    echo "demo: $mnt is already mounted; 'scripts/demo.sh stop $mnt' first to start over"
    exit 0
  fi
  make_samples
  servers start apache "$PORT" "$DATA"
  local url; url=$(servers url apache "$PORT")
  if [[ -z ${CLOUDMOUNT_BIN:-} ]]; then
    echo "demo: building cloudmount (cargo build --release; the first build takes a few minutes)"
    cargo build --release --quiet
  fi
  "$BIN" mount "$url" "$mnt" --log-file "$STATE/cloudmount.log" --state-dir "$STATE/cloudmount-state"
  cat <<MSG

cloudmount: $url is mounted at $mnt

Try:
  ls -l $mnt
  cat $mnt/hello.txt
  ls -l "$mnt/notes"
  cmp $mnt/big.bin $DATA/big.bin && echo identical     # 50 MiB streamed over WebDAV
  dd if=$mnt/big.bin bs=4k skip=10000 count=1 | od -A d -t x1 | head -3   # a read in the middle: a small range
  cp /etc/os-release $mnt/notes/ && ls -l $DATA/notes/          # a write: on the server within a moment
  echo "edited" >> $mnt/hello.txt; sync $mnt/hello.txt; tail -1 $DATA/hello.txt   # fsync: on the server when it returns
  ln -s hello.txt $mnt/link                             # fails: Operation not permitted (WebDAV has no symlinks)
  $BIN status $mnt --state-dir $STATE/cloudmount-state   # uploads still on their way, if any
  echo changed >> $DATA/hello.txt; sleep 6; cat $mnt/hello.txt     # server-side change, seen after the TTL (5 s)

Logs: $STATE/cloudmount.log (cloudmount), $STATE/apache-$PORT/logs/ (the server)
Stop: scripts/demo.sh stop$([[ $mnt == "$DEFAULT_MNT" ]] || echo " $mnt")
MSG
}

stop() {
  local mnt=$1
  if is_mounted "$mnt"; then
    if [[ -x $BIN ]]; then "$BIN" unmount "$mnt" --state-dir "$STATE/cloudmount-state" || fusermount3 -u "$mnt"; else fusermount3 -u "$mnt"; fi
    echo "demo: unmounted $mnt"
  else
    echo "demo: $mnt is not mounted"
  fi
  servers stop apache "$PORT"
}

case ${1:-} in
  stop) stop "$(realpath -m "${2:-$DEFAULT_MNT}")" ;;
  -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" ;;
  *) start "$(realpath -m "${1:-$DEFAULT_MNT}")" ;;
esac
