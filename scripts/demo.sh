#!/usr/bin/env bash
# Try cloudmount without any account: a local WebDAV server (Apache mod_dav on 127.0.0.1) with a few sample files,
# mounted as a folder; or the OneDrive path, against the fake Microsoft Graph server. Both can run side by side.
#
#   scripts/demo.sh [MOUNTPOINT]            WebDAV: start Apache with the sample files, build cloudmount (release) and
#                                           mount (default /tmp/cloudmount-demo)
#   scripts/demo.sh onedrive [MOUNTPOINT]   OneDrive: start the fake Graph server (crates/fake-graph) with sample files
#                                           of its own, sign in with `cloudmount login onedrive demo` (device code,
#                                           approved by the fake) and mount (default /tmp/cloudmount-demo-onedrive)
#   scripts/demo.sh stop [MOUNTPOINT]       unmount (waiting for uploads) and stop that demo's server; without a
#                                           MOUNTPOINT, every demo that runs
#
# The first build takes a few minutes (about 5 on two cores); after that a demo is mounted in seconds. Each demo
# seeds its data folder only when the folder does not exist yet, so edits made through the mount stay.
# Environment: DEMO_PORT (Apache, default 8765), DEMO_GRAPH_PORT (fake Graph, default 8766), DEMO_DATA (the folder
# Apache serves, default /tmp/cloudmount-demo-data), DEMO_ONEDRIVE_DATA (seeds the fake OneDrive, default
# /tmp/cloudmount-demo-onedrive-data), DEMO_STATE (server config, pids and logs, cloudmount's logs and state; default
# /tmp/cloudmount-demo-state), DEMO_BIG_MIB (size of big.bin, default 50), CLOUDMOUNT_BIN and FAKE_GRAPH_BIN (use these
# binaries instead of building target/release/cloudmount and target/release/fake-graph).
# Needs root or sudo only to install missing packages (fuse3; for WebDAV also apache2 and curl).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

PORT=${DEMO_PORT:-8765}
GRAPH_PORT=${DEMO_GRAPH_PORT:-8766}
DATA=$(realpath -m "${DEMO_DATA:-/tmp/cloudmount-demo-data}")
OD_DATA=$(realpath -m "${DEMO_ONEDRIVE_DATA:-/tmp/cloudmount-demo-onedrive-data}")
STATE=$(realpath -m "${DEMO_STATE:-/tmp/cloudmount-demo-state}")
BIG_MIB=${DEMO_BIG_MIB:-50}
DEFAULT_MNT=/tmp/cloudmount-demo
DEFAULT_OD_MNT=/tmp/cloudmount-demo-onedrive
CM_STATE=$STATE/cloudmount-state
servers() { STATE_DIR=$STATE scripts/webdav-servers.sh "$@"; }
is_mounted() { grep -qF " $1 " /proc/self/mountinfo; }
say() { echo "demo: $*"; }
die() { echo "demo: $*" >&2; exit 1; }
# A command line as it can be pasted into a shell.
cmdline() { local out="" a; for a in "$@"; do out+="$(printf '%q' "$a") "; done; echo "${out% }"; }

# Install the Debian packages named in "$@" that are missing (and nothing else).
install_missing() {
  (($#)) || return 0
  say "installing $*"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The cloudmount binary (absolute, so the printed commands work from any folder).
cloudmount_bin() {
  if [[ -n ${CLOUDMOUNT_BIN:-} ]]; then
    realpath "$CLOUDMOUNT_BIN"
    return
  fi
  [[ -x target/release/cloudmount ]] || say "building cloudmount (cargo build --release; the first build takes about 5 minutes)" >&2
  cargo build --release --quiet --bin cloudmount >&2
  echo "$REPO/target/release/cloudmount"
}

fake_graph_bin() {
  if [[ -n ${FAKE_GRAPH_BIN:-} ]]; then
    realpath "$FAKE_GRAPH_BIN"
    return
  fi
  [[ -x target/release/fake-graph ]] || say "building the fake Graph server (cargo build --release -p fake-graph)" >&2
  cargo build --release --quiet -p fake-graph --bin fake-graph >&2
  echo "$REPO/target/release/fake-graph"
}

# Sample content in folder $1 (only when it does not exist yet): a text file saying $2, notes, "photos" and big.bin
# (to see streaming and range reads).
make_samples() {
  local dir=$1 what=$2
  [[ -e $dir ]] && return 0
  mkdir -p "$dir/photos" "$dir/notes"
  printf 'Hello from cloudmount!\n%s\n' "$what" >"$dir/hello.txt"
  for i in 1 2 3; do printf 'note %s\n' "$i" >"$dir/notes/note $i.txt"; done
  for i in 1 2 3 4; do head -c $((200000 + i * 1000)) /dev/urandom >"$dir/photos/photo-$i.jpg"; done
  head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$dir/big.bin"
  chmod -R a+rX "$dir"
}

# Refuse a mountpoint that is in use, and a second instance of one demo (they would share a server port).
check_free() { # kind mountpoint
  local kind=$1 mnt=$2 record=$STATE/$1.mnt
  if is_mounted "$mnt"; then
    die "$mnt is already mounted. Stop it with: scripts/demo.sh stop $(printf '%q' "$mnt")   or give another folder: scripts/demo.sh$([[ $kind == webdav ]] || echo " $kind") DIR"
  fi
  if [[ -s $record ]] && is_mounted "$(cat "$record")"; then
    die "the $kind demo is already mounted at $(cat "$record"); stop it first: scripts/demo.sh stop $(printf '%q' "$(cat "$record")")"
  fi
}

hints_common() { # mountpoint bin mount-command...
  local mnt=$1 bin=$2
  shift 2
  cat <<MSG
Unmount (waits for uploads):  $(cmdline "$bin" unmount "$mnt")
Mount again:                  $(cmdline "$@")
Stop the demo:                scripts/demo.sh stop $(printf '%q' "$mnt")
MSG
}

start_webdav() {
  local mnt=$1 need=()
  command -v fusermount3 >/dev/null || need+=(fuse3)
  [[ -x /usr/sbin/apache2 ]] || need+=(apache2)
  command -v curl >/dev/null || need+=(curl)
  install_missing "${need[@]}"
  mkdir -p "$STATE" "$mnt"
  chmod 755 "$STATE"
  check_free webdav "$mnt"
  local bin; bin=$(cloudmount_bin)
  make_samples "$DATA" "This file lives in $DATA and is served over WebDAV by Apache on 127.0.0.1:$PORT."
  servers start apache "$PORT" "$DATA" >/dev/null
  local url; url=$(servers url apache "$PORT")
  local mount=("$bin" mount "$url" "$mnt" --log-file "$STATE/cloudmount-webdav.log" --state-dir "$CM_STATE")
  "${mount[@]}"
  echo "$mnt" >"$STATE/webdav.mnt"
  local m q d; m=$(printf '%q' "$mnt"); d=$(printf '%q' "$DATA"); q=$(printf '%q' "$bin")
  cat <<MSG

cloudmount: $url is mounted at $mnt

Try:
  ls -l $m
  cat $m/hello.txt
  ls -l $m/notes
  cmp $m/big.bin $d/big.bin && echo identical     # ${BIG_MIB} MiB streamed over WebDAV
  dd if=$m/big.bin bs=4k skip=100 count=1 status=none | od -A d -t x1 | head -3   # a read in the middle: a small range
  dd if=/etc/os-release of=$m/notes/os-release conv=fsync status=none && ls -l $d/notes/   # fsync: on the server when dd returns
  echo edited | dd of=$m/hello.txt oflag=append conv=notrunc,fsync status=none; tail -1 $d/hello.txt
  cp $m/big.bin $m/copy.bin; $q status --watch $m   # the upload's progress (Ctrl-C stops watching)
  ln -s hello.txt $m/link                           # fails: Operation not permitted (WebDAV has no symlinks)
  echo changed >> $d/hello.txt; sleep 6; cat $m/hello.txt   # a change on the server, seen after the TTL (5 s)

Logs: $STATE/cloudmount-webdav.log (cloudmount), $STATE/apache-$PORT/logs/ (the server)
$(hints_common "$mnt" "$bin" "${mount[@]}")
MSG
}

# The OneDrive path without an account: the fake Graph and identity server, seeded from a folder of its own.
start_onedrive() {
  local mnt=$1 fake=$STATE/fake-graph
  command -v fusermount3 >/dev/null || install_missing fuse3
  mkdir -p "$STATE" "$mnt"
  check_free onedrive "$mnt"
  local bin fg; bin=$(cloudmount_bin); fg=$(fake_graph_bin)
  make_samples "$OD_DATA" "This file lives in the fake OneDrive (crates/fake-graph) on 127.0.0.1:$GRAPH_PORT, seeded from $OD_DATA."
  stop_fake
  say "starting the fake Graph server on 127.0.0.1:$GRAPH_PORT (log: $fake.log)"
  # Device codes are approved by the fake itself a second after they are issued: no browser needed.
  nohup "$fg" --addr "127.0.0.1:$GRAPH_PORT" --seed-dir "$OD_DATA" \
    --auto-approve-after 1 --device-code-interval 1 --pid-file "$fake.pid" >"$fake.log" 2>&1 &
  for _ in $(seq 1 120); do [[ -s $fake.pid ]] && break; kill -0 $! 2>/dev/null || break; sleep 0.25; done
  [[ -s $fake.pid ]] || { cat "$fake.log" >&2; die "the fake Graph server did not start (its log is above)"; }
  local graph login client
  graph=$(awk '$1 == "graph_url" { print $3 }' "$fake.log")
  login=$(awk '$1 == "login_url" { print $3 }' "$fake.log")
  client=$(awk '$1 == "client_id" { print $3 }' "$fake.log")
  local cfg=$STATE/onedrive-config.toml
  cat >"$cfg" <<TOML
# Written by scripts/demo.sh onedrive: a OneDrive remote served by the fake Graph server.
[remotes.demo]
type = "onedrive"
graph_url = "$graph"
login_url = "$login"
client_id = "$client"
TOML
  "$bin" login onedrive demo --config "$cfg" --state-dir "$CM_STATE"
  local mount=("$bin" mount demo "$mnt" --config "$cfg" --state-dir "$CM_STATE" --log-file "$STATE/cloudmount-onedrive.log")
  "${mount[@]}"
  echo "$mnt" >"$STATE/onedrive.mnt"
  local m q; m=$(printf '%q' "$mnt"); q=$(printf '%q' "$bin")
  cat <<MSG

cloudmount: the fake OneDrive at $graph is mounted at $mnt (read-write)

Try:
  ls -l $m
  cat $m/hello.txt
  cmp $m/big.bin $(printf '%q' "$OD_DATA")/big.bin && echo identical   # ${BIG_MIB} MiB through download URLs
  echo "hello OneDrive" > $m/new.txt; cat $m/new.txt   # uploaded in the background
  dd if=/etc/os-release of=$m/os-release conv=fsync status=none && echo uploaded   # fsync: on the server when dd returns
  cp $m/big.bin $m/copy.bin; $q status --watch $m   # upload sessions in 10 MiB fragments (Ctrl-C stops watching)
  $q status $m                                      # the sign-in state ("auth: signed in") and pending uploads

The fake keeps its drive in memory: what you write lives until the demo stops ($(printf '%q' "$OD_DATA") only seeds it).
Config: $cfg   Tokens: $CM_STATE/tokens/demo.json
Logs: $STATE/cloudmount-onedrive.log (cloudmount), $fake.log (the fake Graph server)
$(hints_common "$mnt" "$bin" "${mount[@]}")
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
    say "fake Graph server stopped (pid $pid)"
  fi
  rm -f "$pidf"
}

unmount_dir() {
  local mnt=$1 bin=${CLOUDMOUNT_BIN:-target/release/cloudmount}
  if ! is_mounted "$mnt"; then
    say "$mnt is not mounted"
    return 0
  fi
  if [[ -x $bin ]]; then
    # Waits for the uploads and names any that stay queued; the mount is gone either way.
    "$bin" unmount "$mnt" || true
  fi
  is_mounted "$mnt" && fusermount3 -u "$mnt"
  say "unmounted $mnt"
}

stop_kind() { # webdav|onedrive
  local record=$STATE/$1.mnt
  [[ -s $record ]] && unmount_dir "$(cat "$record")"
  case $1 in
    webdav) servers stop apache "$PORT" >/dev/null 2>&1 || true ;;
    onedrive) stop_fake ;;
  esac
  rm -f "$record"
  say "the $1 demo is stopped"
}

stop() { # [mountpoint]
  local mnt=${1:-} kind stopped=0
  for kind in webdav onedrive; do
    local record=$STATE/$kind.mnt
    if [[ -s $record ]] && [[ -z $mnt || $(cat "$record") == "$mnt" ]]; then
      stop_kind "$kind"
      stopped=1
    fi
  done
  if ((stopped == 0)); then
    # Nothing recorded (an older demo): unmount the folder named, or the defaults, and stop both servers.
    if [[ -n $mnt ]]; then unmount_dir "$mnt"; else unmount_dir "$DEFAULT_MNT"; unmount_dir "$DEFAULT_OD_MNT"; fi
    servers stop apache "$PORT" >/dev/null 2>&1 || true
    stop_fake
  fi
}

case ${1:-} in
  stop) stop "${2:+$(realpath -m "$2")}" ;;
  onedrive) start_onedrive "$(realpath -m "${2:-$DEFAULT_OD_MNT}")" ;;
  -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
  *) start_webdav "$(realpath -m "${1:-$DEFAULT_MNT}")" ;;
esac
