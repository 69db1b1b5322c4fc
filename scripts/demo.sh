#!/usr/bin/env bash
# Try cloudmount without any account: a local WebDAV server (Apache mod_dav on 127.0.0.1) with a few sample files,
# mounted as a folder; or the same through the OneDrive path, against the fake Microsoft Graph server.
#
#   scripts/demo.sh [MOUNTPOINT]          start the server, build cloudmount (release), mount (default /tmp/cloudmount-demo)
#   scripts/demo.sh onedrive [MOUNTPOINT] start the fake Graph server (crates/fake-graph) with the sample files, sign in
#                                         with `cloudmount login onedrive demo` (device code, approved by the fake), mount
#   scripts/demo.sh stop [MOUNTPOINT]     unmount, and stop the servers (Apache and the fake Graph server)
#
# Environment: DEMO_PORT (default 8765), DEMO_GRAPH_PORT (fake Graph, default 8766), DEMO_DATA (served folder, default
# /tmp/cloudmount-demo-data), DEMO_STATE (server config, pid and logs, and cloudmount's log and state; default
# /tmp/cloudmount-demo-state), CLOUDMOUNT_BIN (use this binary instead of building target/release/cloudmount).
# Needs root or sudo only to install missing packages (fuse3, apache2, apache2-utils, curl).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${DEMO_PORT:-8765}
GRAPH_PORT=${DEMO_GRAPH_PORT:-8766}
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

# The OneDrive path without an account: the fake Graph and identity server holds the sample files.
start_onedrive() {
  local mnt=$1 fake=$STATE/fake-graph
  command -v fusermount3 >/dev/null || scripts/install-test-deps.sh
  mkdir -p "$STATE" "$mnt"
  if is_mounted "$mnt"; then
    echo "demo: $mnt is already mounted; 'scripts/demo.sh stop $mnt' first to start over"
    exit 0
  fi
  make_samples
  printf 'This file lives in the fake OneDrive (crates/fake-graph) on 127.0.0.1:%s, seeded from %s.\n' \
    "$GRAPH_PORT" "$DATA" >"$DATA/hello.txt"
  echo "demo: building the fake Graph server$([[ -n ${CLOUDMOUNT_BIN:-} ]] || echo " and cloudmount") (release; the first build takes a few minutes)"
  cargo build --release --quiet -p fake-graph
  [[ -n ${CLOUDMOUNT_BIN:-} ]] || cargo build --release --quiet
  stop_fake
  echo "demo: starting the fake Graph server on 127.0.0.1:$GRAPH_PORT (log: $fake.log)"
  # Device codes are approved by the fake itself a second after they are issued: no browser needed.
  nohup cargo run --release --quiet -p fake-graph -- --addr "127.0.0.1:$GRAPH_PORT" --seed-dir "$DATA" \
    --auto-approve-after 1 --device-code-interval 1 --pid-file "$fake.pid" >"$fake.log" 2>&1 &
  for _ in $(seq 1 240); do [[ -s $fake.pid ]] && break; kill -0 $! 2>/dev/null || break; sleep 0.25; done
  [[ -s $fake.pid ]] || { echo "demo: the fake Graph server did not start; its log:"; cat "$fake.log"; exit 1; }
  local graph login client
  graph=$(awk '$1 == "graph_url" { print $3 }' "$fake.log")
  login=$(awk '$1 == "login_url" { print $3 }' "$fake.log")
  client=$(awk '$1 == "client_id" { print $3 }' "$fake.log")
  local cfg=$STATE/onedrive-config.toml st=$STATE/cloudmount-state
  cat >"$cfg" <<TOML
# Written by scripts/demo.sh onedrive: a OneDrive remote served by the fake Graph server.
[remotes.demo]
type = "onedrive"
graph_url = "$graph"
login_url = "$login"
client_id = "$client"
TOML
  "$BIN" login onedrive demo --config "$cfg" --state-dir "$st"
  "$BIN" mount demo "$mnt" --config "$cfg" --state-dir "$st" --log-file "$STATE/cloudmount.log"
  cat <<MSG

cloudmount: the fake OneDrive at $graph is mounted at $mnt (read-only: Graph writes are not in this build yet)

Try:
  ls -l $mnt
  cat $mnt/hello.txt
  ls -l "$mnt/notes"
  cmp $mnt/big.bin $DATA/big.bin && echo identical     # 50 MiB through download URLs
  dd if=$mnt/big.bin bs=4k skip=10000 count=1 | od -A d -t x1 | head -3   # a read in the middle: a small range
  touch $mnt/new.txt                                    # fails: Read-only file system
  $BIN status $mnt --state-dir $st                      # the sign-in state ("auth: signed in")

Config: $cfg   Tokens: $st/tokens/demo.json
Logs: $STATE/cloudmount.log (cloudmount), $fake.log (the fake Graph server)
Stop: scripts/demo.sh stop$([[ $mnt == "$DEFAULT_MNT" ]] || echo " $mnt")
MSG
}

stop_fake() {
  local pidf=$STATE/fake-graph.pid
  [[ -s $pidf ]] || return 0
  local pid; pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "demo: fake Graph server stopped (pid $pid)"
  fi
  rm -f "$pidf"
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
  stop_fake
}

case ${1:-} in
  stop) stop "$(realpath -m "${2:-$DEFAULT_MNT}")" ;;
  onedrive) start_onedrive "$(realpath -m "${2:-$DEFAULT_MNT}")" ;;
  -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" ;;
  *) start "$(realpath -m "${1:-$DEFAULT_MNT}")" ;;
esac
