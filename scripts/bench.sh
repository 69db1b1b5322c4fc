#!/usr/bin/env bash
# Benchmarks (issue 9): cloudmount against rclone mount (--vfs-cache-mode full) and davfs2 on the same local WebDAV
# server (Apache mod_dav on 127.0.0.1, HTTP Basic auth), with curl GET/PUT of the same files as the wire's limit, and
# cloudmount against the fake Graph server when this build can mount OneDrive. Prints one Markdown table
# (docs/benchmarks.md keeps the latest). Not part of CI. Needs root (drop_caches, mounts, apt-get for missing tools).
#
#   scripts/bench.sh [--quick] [--only cloudmount|rclone|davfs2|curl|graph] [--size-mib N] [--big-mib N] [--baseline BIN]
#
#   --quick        small sizes to iterate: 64 MiB fio files, 128 MiB copies, 1,000 files, 5 s of random reads
#   --only X       one client (repeatable); default: all of them
#   --size-mib N   size of the fio files (default 256)
#   --big-mib N    size of the file copied out of and into the mount (default 1024)
#   --baseline BIN another cloudmount binary (an older build) run through the same workloads in the same run, as
#                  its own column, with each workload's ratio to it: the way to compare two builds, since times
#                  from different runs are not comparable
#
# Environment: BENCH_DIR (scratch space, default /tmp/cloudmount-bench; removed at the end), BENCH_PORT (Apache,
# default 8791), BENCH_GRAPH_PORT (fake Graph, default 8792), CLOUDMOUNT_BIN (default target/release/cloudmount, built
# with cargo build --release when missing), CLOUDMOUNT_ARGS (extra `cloudmount mount` flags).
#
# Workloads, each on a fresh mount after `sync; echo 3 > /proc/sys/vm/drop_caches` (cloudmount's --disk-cache-dir,
# rclone's --cache-dir and davfs2's cache_dir are emptied too):
#   seq write   fio 1 MiB blocks, end_fsync; fio's runtime (fsync included) plus the wait after fio until the
#               server's file has every byte
#   seq read    fio 1 MiB blocks of a file put straight into the server's folder
#   rand read   fio 4 KiB random reads of that file for RAND_SECS (30) seconds, time_based
#   ls -l       of a folder of FILES (10,000) files: cold (fresh mount), then warm (again at once)
#   cp out      cp of the big file out of the mount to local disk
#   cp in       cp of a local big file into the mount; timed until the server's file has every byte
#   RSS         VmHWM of the mount's process (cloudmount, rclone, mount.davfs) at the end of each workload
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

QUICK=0 SIZE=256 BIG=1024 FILES=10000 RAND_SECS=30 ONLY=() SIZE_SET=0 BIG_SET=0 BASE_BIN=""
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --only) ONLY+=("$2"); shift ;;
    --size-mib) SIZE=$2; SIZE_SET=1; shift ;;
    --big-mib) BIG=$2; BIG_SET=1; shift ;;
    --baseline) BASE_BIN=$(realpath "$2"); shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if ((QUICK)); then
  ((SIZE_SET)) || SIZE=64
  ((BIG_SET)) || BIG=128
  FILES=1000 RAND_SECS=5
fi
((${#ONLY[@]})) || ONLY=(curl cloudmount rclone davfs2 graph)
[[ -n $BASE_BIN ]] && ONLY+=(baseline)
want() { local x; for x in "${ONLY[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

[[ $(id -u) == 0 ]] || { echo "bench.sh: run as root (drop_caches, mounts)" >&2; exit 1; }

WORK=${BENCH_DIR:-/tmp/cloudmount-bench}
PORT=${BENCH_PORT:-8791}
GRAPH_PORT=${BENCH_GRAPH_PORT:-8792}
BIN=${CLOUDMOUNT_BIN:-$REPO/target/release/cloudmount}
DATA=$WORK/data        # the folder Apache serves
LOCAL=$WORK/local      # local files: the source of `cp in`, the target of `cp out`
MNT=$WORK/mnt
USER_=bench PASS_=bench-pass
STATE=$WORK/state
log() { echo "bench: $*" >&2; }

# ---------------------------------------------------------------- tools
install_tools() {
  local need=()
  command -v fio >/dev/null || need+=(fio)
  command -v curl >/dev/null || need+=(curl)
  command -v jq >/dev/null || need+=(jq)
  command -v fusermount3 >/dev/null || need+=(fuse3)
  if want rclone; then command -v rclone >/dev/null || need+=(rclone); fi
  if want davfs2; then command -v mount.davfs >/dev/null || need+=(davfs2); fi
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  scripts/webdav-servers.sh install apache
}

# ---------------------------------------------------------------- cleanup
MOUNT_PID=""
FAKE_PID=""
is_mounted() { grep -qF " $1 " /proc/self/mountinfo; }
cleanup() {
  set +e
  if is_mounted "$MNT"; then
    # umount.davfs waits for mount.davfs to upload what it still holds.
    if [[ $1 == davfs2 ]]; then umount "$MNT"; else fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT"; fi 2>/dev/null || umount -l "$MNT" 2>/dev/null
  fi
  [[ -n $MOUNT_PID ]] && kill "$MOUNT_PID" 2>/dev/null
  [[ -n $FAKE_PID ]] && kill "$FAKE_PID" 2>/dev/null
  STATE_DIR=$STATE scripts/webdav-servers.sh stop apache "$PORT" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
now() { date +%s.%N; }
since() { echo "$(now) $1" | awk '{ printf "%.3f", $1 - $2 }'; }
mibps() { awk -v m="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", m / s; else print "-" }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
hwm_mib() { # pid
  awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "-"
}
# Wait until PATH on the server holds SIZE bytes (Apache's PUT writes a temp file and renames it when complete).
wait_server() { # path bytes timeout_secs
  local deadline; deadline=$(awk -v t="$3" -v n="$(now)" 'BEGIN { printf "%.0f", n + t }')
  while :; do
    [[ -f $1 && $(stat -c %s "$1") == "$2" ]] && return 0
    (($(date +%s) > deadline)) && { log "timed out waiting for $1 to reach $2 bytes"; return 1; }
    sleep 0.02
  done
}
fio_json() { fio --output-format=json "$@" 2>>"$STATE/fio.err" || log "fio failed: $*"; }
jqv() { jq -e "$1" <<<"$2" 2>/dev/null || echo "fail"; }
chown_data() { chown -R www-data:www-data "$DATA"; chmod -R a+rX "$DATA"; }

declare -A R   # R[client,metric] = value

# ---------------------------------------------------------------- data
prepare() {
  rm -rf "$WORK"
  mkdir -p "$DATA/many" "$LOCAL" "$MNT" "$STATE"
  chmod 755 "$WORK" "$STATE"
  log "writing test data ($SIZE MiB + $BIG MiB files, $FILES small files) under $WORK"
  head -c $((SIZE << 20)) /dev/urandom >"$DATA/cold.bin"
  head -c $((BIG << 20)) /dev/urandom >"$LOCAL/big.bin"
  ln "$LOCAL/big.bin" "$DATA/big.bin" # one copy on disk: nothing writes it
  (cd "$DATA/many" && seq -f 'f%05g.txt' 1 "$FILES" | xargs -n 1000 touch)
  for f in "$DATA"/many/f0000*.txt; do echo "some content" >"$f"; done
  chown_data
  STATE_DIR=$STATE scripts/webdav-servers.sh start apache "$PORT" "$DATA" "$USER_" "$PASS_" >/dev/null
  URL=$(STATE_DIR=$STATE scripts/webdav-servers.sh url apache "$PORT")
}

# ---------------------------------------------------------------- mounts: start_X sets MOUNT_PID and waits
wait_mounted() { # [pid: stop waiting when it exits]
  for _ in $(seq 1 300); do
    is_mounted "$MNT" && return 0
    [[ -n ${1:-} ]] && ! kill -0 "$1" 2>/dev/null && { log "the mount process exited"; return 1; }
    sleep 0.1
  done
  log "mount at $MNT did not come up"; return 1
}
start_cloudmount() {
  rm -rf "$STATE/cm-disk-cache" # cold runs: nothing downloaded before
  CLOUDMOUNT_PASSWORD=$PASS_ "$BIN" mount "$URL" "$MNT" --foreground --user "$USER_" \
    --state-dir "$STATE/cm-state" --disk-cache-dir "$STATE/cm-disk-cache" ${CLOUDMOUNT_ARGS:-} \
    >>"$STATE/cloudmount.log" 2>&1 &
  MOUNT_PID=$!
  wait_mounted "$MOUNT_PID"
}
start_baseline() { # the --baseline binary, mounted as cloudmount is
  local BIN=$BASE_BIN
  start_cloudmount
}
start_rclone() {
  rm -rf "$STATE/rclone-cache"
  cat >"$STATE/rclone.conf" <<EOF
[dav]
type = webdav
url = $URL
vendor = other
user = $USER_
pass = $(rclone obscure "$PASS_")
EOF
  rclone mount dav: "$MNT" --config "$STATE/rclone.conf" --vfs-cache-mode full --cache-dir "$STATE/rclone-cache" \
    >>"$STATE/rclone.log" 2>&1 &
  MOUNT_PID=$!
  wait_mounted "$MOUNT_PID"
}
start_davfs2() {
  rm -rf "$STATE/davfs2-cache"
  mkdir -p "$STATE/davfs2-cache"
  chmod 777 "$STATE/davfs2-cache" # mount.davfs checks it as its own user
  printf '%s %s %s\n' "$URL" "$USER_" "$PASS_" >"$STATE/davfs2.secrets"
  chmod 600 "$STATE/davfs2.secrets"
  # buf_size 64 (KiB, default 16): with Linux >= 6.16 davfs2's default makes every readdir fail with EINVAL
  # (davfs2 issue #22); it only sizes the FUSE message buffer.
  printf 'secrets %s\ncache_dir %s\nbuf_size 64\n' "$STATE/davfs2.secrets" "$STATE/davfs2-cache" >"$STATE/davfs2.conf"
  mount -t davfs "$URL" "$MNT" -o "conf=$STATE/davfs2.conf" </dev/null >>"$STATE/davfs2.log" 2>&1
  wait_mounted
  local pidf; pidf=/var/run/mount.davfs/$(echo "${MNT#/}" | tr / -).pid
  MOUNT_PID=$(cat "$pidf" 2>/dev/null || true)
}
stop_mount() { # client
  if is_mounted "$MNT"; then
    # umount.davfs waits for mount.davfs to upload what it still holds.
    if [[ $1 == davfs2 ]]; then umount "$MNT"; else fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT"; fi
  fi
  # Wait for the process to finish (davfs2 uploads what it still holds; cloudmount exits once unmounted).
  if [[ -n $MOUNT_PID ]]; then
    for _ in $(seq 1 600); do kill -0 "$MOUNT_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$MOUNT_PID" 2>/dev/null || true
  fi
  MOUNT_PID=""
}
fresh_mount() { # client
  drop_caches
  "start_$1"
}

# ---------------------------------------------------------------- workloads on one mount client
run_client() {
  local c=$1 t0 secs out
  log "$c: sequential write $SIZE MiB"
  rm -f "$DATA/fio-write.bin"
  fresh_mount "$c"
  out=$(fio_json --name=seqwrite --filename="$MNT/fio-write.bin" --rw=write --bs=1M --size="${SIZE}M" --end_fsync=1)
  t0=$(now)
  # fio's own runtime (the end_fsync included; fio's start-up is not), plus however long after fio the server
  # still waited for the bytes (rclone and davfs2 upload after close, after a delay).
  wait_server "$DATA/fio-write.bin" $((SIZE << 20)) 300 &&
    secs=$(awk -v r="$(jqv '.jobs[0].write.runtime' "$out")" -v w="$(since "$t0")" \
      'BEGIN { if (r + 0 > 0) printf "%.3f", r / 1000 + w }') || secs=""
  R[$c,write]=$([[ -n $secs ]] && mibps "$SIZE" "$secs" || echo "fail")
  R[$c,write_s]=$secs
  R[$c,rss_write]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"
  rm -f "$DATA/fio-write.bin"

  log "$c: sequential read $SIZE MiB, cold"
  fresh_mount "$c"
  out=$(fio_json --name=seqread --filename="$MNT/cold.bin" --readonly --rw=read --bs=1M --size="${SIZE}M")
  R[$c,read]=$(jqv '.jobs[0].read.bw_bytes / 1048576 | round' "$out")
  R[$c,rss_read]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"

  log "$c: random 4 KiB reads for $RAND_SECS s, cold"
  fresh_mount "$c"
  out=$(fio_json --name=randread --filename="$MNT/cold.bin" --readonly --rw=randread --bs=4k --size="${SIZE}M" \
    --time_based --runtime="$RAND_SECS" --randrepeat=1)
  R[$c,rand]=$(jqv '.jobs[0].read.iops | round' "$out")
  R[$c,rss_rand]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"

  log "$c: ls -l of $FILES files, cold then warm"
  fresh_mount "$c"
  t0=$(now); ls -l "$MNT/many" >"$STATE/ls.out" || true; R[$c,ls_cold]=$(since "$t0")
  [[ $(grep -c '^-' "$STATE/ls.out") == "$FILES" ]] || R[$c,ls_cold]="fail"
  t0=$(now); ls -l "$MNT/many" >/dev/null || true; R[$c,ls_warm]=$(since "$t0")
  R[$c,rss_ls]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"

  log "$c: cp $BIG MiB out of the mount"
  rm -f "$LOCAL/out.bin"
  fresh_mount "$c"
  t0=$(now); cp "$MNT/big.bin" "$LOCAL/out.bin" || true; R[$c,cp_out]=$(since "$t0")
  R[$c,rss_cp_out]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"
  cmp -s "$LOCAL/out.bin" "$LOCAL/big.bin" || { log "$c: cp out: content differs"; R[$c,cp_out]="fail"; }
  rm -f "$LOCAL/out.bin"
  [[ $c == rclone ]] && rm -rf "$STATE/rclone-cache"

  log "$c: cp $BIG MiB into the mount (until the server has it)"
  rm -f "$DATA/in.bin"
  fresh_mount "$c"
  t0=$(now)
  cp "$LOCAL/big.bin" "$MNT/in.bin" || log "$c: cp into the mount failed"
  R[$c,cp_in_local]=$(since "$t0")
  wait_server "$DATA/in.bin" $((BIG << 20)) 600 && R[$c,cp_in]=$(since "$t0") || R[$c,cp_in]="fail"
  R[$c,rss_cp_in]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"
  cmp -s "$DATA/in.bin" "$LOCAL/big.bin" || { log "$c: cp in: content differs on the server"; R[$c,cp_in]="fail"; }
  rm -f "$DATA/in.bin"
  rm -rf "$STATE/rclone-cache" "$STATE/davfs2-cache" "$STATE/cm-state" "$STATE/cm-disk-cache"
}

# ---------------------------------------------------------------- curl: the wire
run_curl() {
  local s
  log "curl: GET and PUT"
  drop_caches
  s=$(curl -sS -f -u "$USER_:$PASS_" -o /dev/null -w "%{time_total}" "${URL}cold.bin")
  R[curl,read]=$(mibps "$SIZE" "$s")
  drop_caches
  s=$(curl -sS -f -u "$USER_:$PASS_" -o "$LOCAL/out.bin" -w "%{time_total}" "${URL}big.bin")
  R[curl,cp_out]=$(printf "%.3f" "$s")
  rm -f "$LOCAL/out.bin"
  head -c $((SIZE << 20)) /dev/urandom >"$LOCAL/put.bin"
  # fio writes from memory: give curl its source from memory too (read once after the drop).
  drop_caches
  cat "$LOCAL/put.bin" >/dev/null
  s=$(curl -sS -f -u "$USER_:$PASS_" -T "$LOCAL/put.bin" -o /dev/null -w "%{time_total}" "${URL}put.bin")
  R[curl,write]=$(mibps "$SIZE" "$s")
  R[curl,write_s]=$s
  rm -f "$LOCAL/put.bin" "$DATA/put.bin"
  # `cp` into a mount reads its source cold (every workload starts after a drop): so does curl.
  drop_caches
  s=$(curl -sS -f -u "$USER_:$PASS_" -T "$LOCAL/big.bin" -o /dev/null -w "%{time_total}" "${URL}in.bin")
  R[curl,cp_in]=$(printf "%.3f" "$s")
  rm -f "$DATA/in.bin"
}

# ---------------------------------------------------------------- graph: cloudmount against the fake Graph server
run_graph() {
  if ! "$BIN" login --help >/dev/null 2>&1; then
    R[graph,skip]="skipped: OneDrive mounts not available in this build"
    log "graph: ${R[graph,skip]}"
    return 0
  fi
  local fake=$STATE/fake-graph seed=$WORK/graph-seed
  mkdir -p "$seed/many"
  ln "$DATA/cold.bin" "$DATA/big.bin" "$seed/"
  (cd "$seed/many" && seq -f 'f%05g.txt' 1 "$FILES" | xargs -n 1000 touch)
  local fg=$REPO/target/release/fake-graph
  [[ -x $fg ]] || cargo build --release --quiet -p fake-graph
  "$fg" --addr "127.0.0.1:$GRAPH_PORT" --seed-dir "$seed" --auto-approve-after 1 --device-code-interval 1 \
    >"$fake.log" 2>&1 &
  FAKE_PID=$!
  for _ in $(seq 1 100); do grep -q '^graph_url' "$fake.log" && break; sleep 0.1; done
  rm -rf "$seed"
  local cfg=$STATE/graph-config.toml st=$STATE/graph-state
  cat >"$cfg" <<TOML
[remotes.bench]
type = "onedrive"
graph_url = "$(awk '$1 == "graph_url" { print $3 }' "$fake.log")"
login_url = "$(awk '$1 == "login_url" { print $3 }' "$fake.log")"
client_id = "$(awk '$1 == "client_id" { print $3 }' "$fake.log")"
TOML
  if ! "$BIN" login onedrive bench --config "$cfg" --state-dir "$st" >"$STATE/graph-login.log" 2>&1; then
    R[graph,skip]="skipped: login against the fake Graph server failed (see the log)"
    log "graph: ${R[graph,skip]}"; cat "$STATE/graph-login.log" >&2
    return 0
  fi
  start_graph() {
    rm -rf "$STATE/graph-disk-cache" # cold runs: nothing downloaded before
    "$BIN" mount bench "$MNT" --config "$cfg" --state-dir "$st" --disk-cache-dir "$STATE/graph-disk-cache" \
      --foreground ${CLOUDMOUNT_ARGS:-} >>"$STATE/graph-mount.log" 2>&1 &
    MOUNT_PID=$!
    wait_mounted "$MOUNT_PID"
  }
  # `login onedrive` may be there before `mount` can use it.
  if ! start_graph; then
    if grep -q "cannot mount OneDrive" "$STATE/graph-mount.log"; then
      R[graph,skip]="skipped: OneDrive mounts not available in this build"
    else
      R[graph,skip]="skipped: the OneDrive mount of the fake Graph server failed"
      tail -5 "$STATE/graph-mount.log" >&2
    fi
    log "graph: ${R[graph,skip]}"
    stop_mount graph
    kill "$FAKE_PID" 2>/dev/null; wait "$FAKE_PID" 2>/dev/null || true; FAKE_PID=""
    return 0
  fi
  stop_mount graph
  local c=graph t0 out
  log "graph: sequential read $SIZE MiB, cold"
  fresh_mount graph
  out=$(fio_json --name=seqread --filename="$MNT/cold.bin" --readonly --rw=read --bs=1M --size="${SIZE}M")
  R[$c,read]=$(jqv '.jobs[0].read.bw_bytes / 1048576 | round' "$out")
  R[$c,rss_read]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"
  log "graph: random 4 KiB reads for $RAND_SECS s, cold"
  fresh_mount graph
  out=$(fio_json --name=randread --filename="$MNT/cold.bin" --readonly --rw=randread --bs=4k --size="${SIZE}M" \
    --time_based --runtime="$RAND_SECS" --randrepeat=1)
  R[$c,rand]=$(jqv '.jobs[0].read.iops | round' "$out")
  R[$c,rss_rand]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"
  log "graph: ls -l of $FILES files"
  fresh_mount graph
  t0=$(now); ls -l "$MNT/many" >/dev/null || true; R[$c,ls_cold]=$(since "$t0")
  t0=$(now); ls -l "$MNT/many" >/dev/null || true; R[$c,ls_warm]=$(since "$t0")
  R[$c,rss_ls]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"
  log "graph: cp $BIG MiB out"
  fresh_mount graph
  t0=$(now); cp "$MNT/big.bin" "$LOCAL/out.bin" || true; R[$c,cp_out]=$(since "$t0")
  R[$c,rss_cp_out]=$(hwm_mib "$MOUNT_PID")
  stop_mount "$c"
  cmp -s "$LOCAL/out.bin" "$LOCAL/big.bin" || R[$c,cp_out]="fail"
  rm -f "$LOCAL/out.bin"
  kill "$FAKE_PID" 2>/dev/null; wait "$FAKE_PID" 2>/dev/null || true; FAKE_PID=""
}

# ---------------------------------------------------------------- table
table() {
  local cols=() c
  for c in cloudmount baseline rclone davfs2 curl graph; do want "$c" && cols+=("$c"); done
  head_of() {
    case $1 in
      cloudmount) echo "cloudmount" ;; rclone) echo "rclone mount (full)" ;; davfs2) echo "davfs2" ;;
      curl) echo "curl (wire)" ;; graph) echo "cloudmount on fake Graph" ;;
      baseline) echo "baseline ($("$BASE_BIN" --version | awk '{ print $2 }'), $(basename "$BASE_BIN"))" ;;
    esac
  }
  local line="| Workload |" sep="|---|"
  for c in "${cols[@]}"; do line+=" $(head_of "$c") |"; sep+="---:|"; done
  echo "$line"; echo "$sep"
  row() { # label key
    local l="| $1 |"
    for c in "${cols[@]}"; do
      if [[ $c == graph && -n ${R[graph,skip]:-} ]]; then l+=" n/a |"; else l+=" ${R[$c,$2]:--} |"; fi
    done
    echo "$l"
  }
  row "Sequential write $SIZE MiB, until on the server (MiB/s)" write
  row "Sequential read $SIZE MiB, cold (MiB/s)" read
  row "Random 4 KiB reads, cold, ${RAND_SECS} s (IOPS)" rand
  row "\`ls -l\` of $FILES files, cold (s)" ls_cold
  row "\`ls -l\` of $FILES files, warm (s)" ls_warm
  row "\`cp\` $BIG MiB out of the mount (s)" cp_out
  row "\`cp\` $BIG MiB into the mount, \`cp\` returns (s)" cp_in_local
  row "\`cp\` $BIG MiB into the mount, until on the server (s)" cp_in
  row "Peak RSS: sequential write (MiB)" rss_write
  row "Peak RSS: sequential read (MiB)" rss_read
  row "Peak RSS: random reads (MiB)" rss_rand
  row "Peak RSS: \`ls -l\` (MiB)" rss_ls
  row "Peak RSS: \`cp\` out (MiB)" rss_cp_out
  row "Peak RSS: \`cp\` in (MiB)" rss_cp_in
  echo
  [[ -n ${R[graph,skip]:-} ]] && echo "Fake Graph: ${R[graph,skip]}." && echo
  # Targets, as ratios within this run.
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
  local cm=cloudmount
  if want cloudmount; then
    echo "Targets (cloudmount, this run):"
    want rclone && echo "- sequential cold read vs rclone (want >= 2x): $(ratio "${R[$cm,read]:-}" "${R[rclone,read]:-}")x"
    want curl && echo "- sequential cold read vs curl GET (want >= 0.40): $(ratio "${R[$cm,read]:-}" "${R[curl,read]:-}")"
    want rclone && echo "- random 4 KiB cold IOPS vs rclone (want >= 1): $(ratio "${R[$cm,rand]:-}" "${R[rclone,rand]:-}")"
    want curl && echo "- sequential write until on the server vs curl PUT (want >= 0.70): $(ratio "${R[$cm,write]:-}" "${R[curl,write]:-}")"
    want curl && echo "- \`cp\` in until on the server vs curl PUT of the same file (want >= 0.70): $(ratio "${R[curl,cp_in]:-}" "${R[$cm,cp_in]:-}")"
    echo "- \`ls -l\` of $FILES files cold (want < 2 s): ${R[$cm,ls_cold]:-} s"
    echo "- peak RSS during the $BIG MiB copies (want < 256 MiB): out ${R[$cm,rss_cp_out]:-} MiB, in ${R[$cm,rss_cp_in]:-} MiB"
  fi
  if want baseline; then
    echo
    echo "Against the baseline build, this run (above 1: this build is faster):"
    echo "- sequential write: $(ratio "${R[$cm,write]:-}" "${R[baseline,write]:-}")"
    echo "- sequential cold read: $(ratio "${R[$cm,read]:-}" "${R[baseline,read]:-}")"
    echo "- random 4 KiB cold reads: $(ratio "${R[$cm,rand]:-}" "${R[baseline,rand]:-}")"
    echo "- \`ls -l\` cold: $(ratio "${R[baseline,ls_cold]:-}" "${R[$cm,ls_cold]:-}"), warm: $(ratio "${R[baseline,ls_warm]:-}" "${R[$cm,ls_warm]:-}")"
    echo "- \`cp\` out: $(ratio "${R[baseline,cp_out]:-}" "${R[$cm,cp_out]:-}"), \`cp\` in until on the server: $(ratio "${R[baseline,cp_in]:-}" "${R[$cm,cp_in]:-}")"
  fi
}

# ---------------------------------------------------------------- main
if [[ ! -x $BIN ]]; then log "building cloudmount (release)"; cargo build --release --quiet; fi
install_tools
is_mounted "$MNT" && { log "$MNT is mounted; unmount it first"; exit 1; }
START=$(now)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
prepare
want curl && run_curl
for c in cloudmount baseline rclone davfs2; do want "$c" && run_client "$c"; done
want graph && run_graph
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "cloudmount $("$BIN" --version | awk '{ print $2 }') ($(git rev-parse --short HEAD 2>/dev/null || echo '?')), \
$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; load average before $LOAD_BEFORE, after $LOAD_AFTER; \
took $(since "$START") s"
echo "Command: scripts/bench.sh$(((QUICK)) && echo " --quick")$( ((SIZE_SET)) && echo " --size-mib $SIZE")\
$( ((BIG_SET)) && echo " --big-mib $BIG")$(for o in "${ONLY[@]}"; do [[ ${#ONLY[@]} == 5 || $o == baseline ]] || echo -n " --only $o"; done)\
$([[ -n $BASE_BIN ]] && echo " --baseline $BASE_BIN")"
echo
table
