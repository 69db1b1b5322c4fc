#!/usr/bin/env bash
# Local WebDAV test servers on loopback (127.0.0.1 only). Idempotent; every server is stopped by its own PID.
# cloudmount's copy of the launcher from the project's shared reference material; the repo, its tests, the demo and CI
# use only this copy. tests/common/apache.rs starts Apache through it; scripts/demo.sh too.
#
#   webdav-servers.sh install [KIND]  apt-get install what that kind needs if missing (default: apache)
#   webdav-servers.sh start  KIND PORT DIR [USER PASS]   KIND: apache|nginx|lighttpd|rclone|wsgidav
#   webdav-servers.sh stop   KIND PORT
#   webdav-servers.sh stop-all
#   webdav-servers.sh status
#   webdav-servers.sh url    KIND PORT   prints the base URL a client should use
#
# URLs:   apache  -> http://127.0.0.1:PORT/dav/   (mod_dav_fs, DavDepthInfinity On, locks in STATE dir)
#         nginx   -> http://127.0.0.1:PORT/       (nginx dav + dav-ext module with LOCK/UNLOCK; no USER PASS here)
#         lighttpd-> http://127.0.0.1:PORT/       (mod_webdav with its sqlite property and lock database; no USER PASS)
#         rclone  -> http://127.0.0.1:PORT/       (rclone serve webdav over a local dir)
#         wsgidav -> http://127.0.0.1:PORT/       (PyPI WsgiDAV+cheroot in a venv; quota props, settable getlastmodified)
# State (configs, pid files, logs) lives in $STATE_DIR (default /tmp/webdav-servers/<kind>-<port>/); STATE_DIR and its
# parents must be searchable by the user Apache runs as (www-data when started as root).
# With USER PASS, the server demands HTTP Basic auth.
# WsgiDAV lives in a Python venv at $WSGIDAV_VENV (default $STATE_DIR/venv-wsgidav), made by `install wsgidav` (pip).
# Apache cannot run as root: if DIR is owned by root it is chown -R'd to www-data; otherwise Apache runs as DIR's owner.
# Apache needs every parent folder of DIR to be searchable by www-data (or by DIR's owner): not under root's 0700 home.
# Files put into DIR later (as root) must be readable by that user: mode 0644 files, 0755 folders.
# Extra flags for rclone serve: $RCLONE_SERVE_ARGS (default: --dir-cache-time 1s, so files written straight into DIR
# show up within a second; rclone's default is 5 minutes).
# `start` waits up to $WAIT_UP_SECS (default 30) for the server to answer PROPFIND.
set -euo pipefail

STATE_DIR=${STATE_DIR:-/tmp/webdav-servers}
WSGIDAV_VENV=${WSGIDAV_VENV:-$STATE_DIR/venv-wsgidav}
HOST=127.0.0.1
APACHE_MODS=/usr/lib/apache2/modules

die() { echo "webdav-servers.sh: $*" >&2; exit 1; }
sd() { echo "$STATE_DIR/$1-$2"; }

url_of() {
  case $1 in
    apache) echo "http://$HOST:$2/dav/" ;;
    nginx|lighttpd|rclone|wsgidav) echo "http://$HOST:$2/" ;;
    *) die "unknown kind $1" ;;
  esac
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_up() { # kind port [user pass]
  local u; u=$(url_of "$1" "$2"); local auth=()
  [[ -n ${3:-} ]] && auth=(-u "$3:$4")
  local tries=$((${WAIT_UP_SECS:-30} * 10))
  for _ in $(seq 1 "$tries"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" -X PROPFIND -H 'Depth: 0' "$u" || true)
    [[ $code == 207 ]] && return 0
    sleep 0.1
  done
  return 1
}

install() { # [kind]
  local kind=${1:-apache} need=()
  command -v curl >/dev/null || need+=(curl)
  case $kind in
    apache)
      [[ -x /usr/sbin/apache2 ]] || need+=(apache2)
      command -v htpasswd >/dev/null || need+=(apache2-utils) ;;
    nginx)
      [[ -x /usr/sbin/nginx ]] || need+=(nginx)
      [[ -f /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ]] || need+=(libnginx-mod-http-dav-ext) ;;
    lighttpd)
      [[ -x /usr/sbin/lighttpd ]] || need+=(lighttpd)
      [[ -f /usr/lib/lighttpd/mod_webdav.so ]] || need+=(lighttpd-mod-webdav) ;;
    rclone) command -v rclone >/dev/null || need+=(rclone) ;;
    wsgidav) python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3 python3-venv) ;;
    *) die "unknown kind $kind" ;;
  esac
  if ((${#need[@]})); then
    # Debian policy-rc.d in containers usually stops the packaged apache2 service from auto-starting; fine either way,
    # because our instances use their own config, ports and pid files.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if [[ $kind == wsgidav && ! -x $WSGIDAV_VENV/bin/wsgidav ]]; then
    mkdir -p "$(dirname "$WSGIDAV_VENV")"
    python3 -m venv "$WSGIDAV_VENV"
    "$WSGIDAV_VENV/bin/pip" install -q 'wsgidav>=4.3' cheroot
  fi
}

start_apache() { # port dir [user pass]
  local port=$1 dir=$2 user=${3:-} pass=${4:-} d; d=$(sd apache "$port")
  mkdir -p "$d"/{run,lock,logs} "$dir"
  dir=$(cd "$dir" && pwd)
  local owner group
  owner=$(stat -c %U "$dir"); group=$(stat -c %G "$dir")
  if [[ $owner == root ]]; then chown -R www-data:www-data "$dir"; owner=www-data; group=www-data; fi
  chown "$owner:$group" "$d/lock"
  local authconf="Require all granted"
  if [[ -n $user ]]; then
    htpasswd -bc "$d/htpasswd" "$user" "$pass" >/dev/null 2>&1
    chmod 644 "$d/htpasswd"
    authconf="AuthType Basic
  AuthName \"dav\"
  AuthUserFile $d/htpasswd
  Require valid-user"
  fi
  cat >"$d/httpd.conf" <<EOF
ServerRoot "/etc/apache2"
ServerName $HOST
Listen $HOST:$port
PidFile $d/run/httpd.pid
DefaultRuntimeDir $d/run
Mutex file:$d/run default
LoadModule mpm_event_module $APACHE_MODS/mod_mpm_event.so
LoadModule authz_core_module $APACHE_MODS/mod_authz_core.so
LoadModule authz_user_module $APACHE_MODS/mod_authz_user.so
LoadModule authn_core_module $APACHE_MODS/mod_authn_core.so
LoadModule authn_file_module $APACHE_MODS/mod_authn_file.so
LoadModule auth_basic_module $APACHE_MODS/mod_auth_basic.so
LoadModule mime_module $APACHE_MODS/mod_mime.so
LoadModule alias_module $APACHE_MODS/mod_alias.so
LoadModule dav_module $APACHE_MODS/mod_dav.so
LoadModule dav_fs_module $APACHE_MODS/mod_dav_fs.so
User $owner
Group $group
ErrorLog $d/logs/error.log
LogFormat "%h %u %t \"%r\" %>s %b %D" davlog
CustomLog $d/logs/access.log davlog
TypesConfig /etc/mime.types
Timeout 300
KeepAlive On
MaxKeepAliveRequests 0
LimitRequestBody 0
LimitXMLRequestBody 0
DavLockDB $d/lock/DavLock
Alias /dav $dir
<Directory $dir>
  Dav On
  DavDepthInfinity On
  Options None
  AllowOverride None
  $authconf
</Directory>
EOF
  /usr/sbin/apache2 -t -f "$d/httpd.conf" >/dev/null 2>&1 || { /usr/sbin/apache2 -t -f "$d/httpd.conf"; die "bad apache config"; }
  /usr/sbin/apache2 -f "$d/httpd.conf" -k start
  for _ in $(seq 1 50); do [[ -s $d/run/httpd.pid ]] && break; sleep 0.1; done
  cp "$d/run/httpd.pid" "$d/pid"
}

# The user nginx's and lighttpd's workers run as: DIR's owner, or www-data when DIR is root's (handed over like Apache).
serving_user() { # dir
  local owner; owner=$(stat -c %U "$1")
  if [[ $owner == root ]]; then chown -R www-data:www-data "$1"; owner=www-data; fi
  echo "$owner"
}

start_nginx() { # port dir
  local port=$1 dir=$2 d; d=$(sd nginx "$port")
  [[ -z ${3:-} ]] || die "nginx: authentication is not set up by this script"
  mkdir -p "$d"/{logs,tmp} "$dir"
  dir=$(cd "$dir" && pwd)
  local owner group; owner=$(serving_user "$dir"); group=$(id -gn "$owner")
  chown "$owner:$group" "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;
user $owner $group;
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/logs/error.log;
events { worker_connections 256; }
http {
  access_log $d/logs/access.log;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  client_max_body_size 0;
  dav_ext_lock_zone zone=davlock:1m;
  server {
    listen $HOST:$port;
    root $dir;
    location / {
      dav_methods PUT DELETE MKCOL COPY MOVE;
      dav_ext_methods PROPFIND OPTIONS LOCK UNLOCK;
      dav_ext_lock zone=davlock;
      dav_access user:rw group:rw all:r;
      create_full_put_path off;
    }
  }
}
EOF
  /usr/sbin/nginx -t -c "$d/nginx.conf" -p "$d" >/dev/null 2>&1 || { /usr/sbin/nginx -t -c "$d/nginx.conf" -p "$d"; die "bad nginx config"; }
  nohup /usr/sbin/nginx -c "$d/nginx.conf" -p "$d" </dev/null >"$d/logs/stdout.log" 2>&1 &
  echo $! >"$d/pid"
}

start_lighttpd() { # port dir
  local port=$1 dir=$2 d; d=$(sd lighttpd "$port")
  [[ -z ${3:-} ]] || die "lighttpd: authentication is not set up by this script"
  mkdir -p "$d"/{logs,db,upload} "$dir"
  dir=$(cd "$dir" && pwd)
  local owner group; owner=$(serving_user "$dir"); group=$(id -gn "$owner")
  chown "$owner:$group" "$d/logs" "$d/db" "$d/upload"
  cat >"$d/lighttpd.conf" <<EOF
server.modules = ( "mod_webdav" )
server.bind = "$HOST"
server.port = $port
server.document-root = "$dir"
server.username = "$owner"
server.groupname = "$group"
server.errorlog = "$d/logs/error.log"
server.upload-dirs = ( "$d/upload" )
server.max-request-size = 0
mimetype.assign = ( "" => "application/octet-stream" )
webdav.activate = "enable"
webdav.is-readonly = "disable"
webdav.sqlite-db-name = "$d/db/webdav.db"
EOF
  /usr/sbin/lighttpd -tt -f "$d/lighttpd.conf" >/dev/null 2>&1 || { /usr/sbin/lighttpd -tt -f "$d/lighttpd.conf"; die "bad lighttpd config"; }
  nohup /usr/sbin/lighttpd -D -f "$d/lighttpd.conf" </dev/null >"$d/logs/stdout.log" 2>&1 &
  echo $! >"$d/pid"
}

start_rclone() { # port dir [user pass]
  local port=$1 dir=$2 user=${3:-} pass=${4:-} d; d=$(sd rclone "$port")
  mkdir -p "$d" "$dir"
  : >"$d/rclone.conf"
  local auth=()
  [[ -n $user ]] && auth=(--user "$user" --pass "$pass")
  # shellcheck disable=SC2086
  nohup rclone --config "$d/rclone.conf" serve webdav "$dir" --addr "$HOST:$port" \
    ${RCLONE_SERVE_ARGS:---dir-cache-time 1s} "${auth[@]}" --log-file "$d/log" --log-level NOTICE \
    </dev/null >/dev/null 2>&1 &
  echo $! >"$d/pid"
}

start_wsgidav() { # port dir [user pass]
  local port=$1 dir=$2 user=${3:-} pass=${4:-} d; d=$(sd wsgidav "$port")
  install wsgidav
  mkdir -p "$d" "$dir"
  dir=$(cd "$dir" && pwd)
  local dc='domain_controller: null'
  local users='"*": true'
  if [[ -n $user ]]; then dc='domain_controller: null'; users="\"*\": {\"$user\": {\"password\": \"$pass\"}}"; fi
  cat >"$d/wsgidav.yaml" <<EOF
host: $HOST
port: $port
server: cheroot
provider_mapping:
  "/": "$dir"
http_authenticator:
  $dc
  accept_basic: true
  accept_digest: false
  default_to_digest: false
simple_dc:
  user_mapping:
    $users
property_manager: true
mutable_live_props: ["{DAV:}getlastmodified"]
hotfixes:
  emulate_win32_lastmod: true
verbose: 1
EOF
  nohup "$WSGIDAV_VENV/bin/wsgidav" --config "$d/wsgidav.yaml" </dev/null >"$d/log" 2>&1 &
  echo $! >"$d/pid"
}

start() {
  local kind=$1 port=$2 dir=$3; shift 3
  [[ $port =~ ^[0-9]+$ ]] || die "bad port $port"
  local d; d=$(sd "$kind" "$port")
  if alive "$d/pid"; then
    echo "$kind already running on $port (pid $(cat "$d/pid")): $(url_of "$kind" "$port")"
    return 0
  fi
  if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then die "port $port is taken by something else"; fi
  case $kind in
    apache) [[ -x /usr/sbin/apache2 ]] || install apache; start_apache "$port" "$dir" "$@" ;;
    nginx) install nginx; start_nginx "$port" "$dir" "$@" ;;
    lighttpd) install lighttpd; start_lighttpd "$port" "$dir" "$@" ;;
    rclone) command -v rclone >/dev/null || install rclone; start_rclone "$port" "$dir" "$@" ;;
    wsgidav) start_wsgidav "$port" "$dir" "$@" ;;
    *) die "unknown kind $kind" ;;
  esac
  wait_up "$kind" "$port" "$@" || die "$kind on $port did not answer PROPFIND (see $d)"
  echo "$kind up on $port (pid $(cat "$d/pid")): $(url_of "$kind" "$port")"
}

stop() {
  local kind=$1 port=$2 d; d=$(sd "$kind" "$port")
  if ! alive "$d/pid"; then rm -f "$d/pid"; echo "$kind $port not running"; return 0; fi
  local pid; pid=$(cat "$d/pid")
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$d/pid"
  echo "$kind $port stopped (pid $pid)"
}

status() {
  shopt -s nullglob
  for d in "$STATE_DIR"/*-[0-9]*; do
    local b kind port; b=$(basename "$d"); kind=${b%-*}; port=${b##*-}
    if alive "$d/pid"; then echo "$kind $port running pid $(cat "$d/pid") $(url_of "$kind" "$port")"
    else echo "$kind $port stopped"; fi
  done
}

cmd=${1:-}; shift || true
case $cmd in
  install) install "$@" ;;
  start) (($# >= 3)) || die "usage: start KIND PORT DIR [USER PASS]"; start "$@" ;;
  stop) (($# == 2)) || die "usage: stop KIND PORT"; stop "$@" ;;
  stop-all)
    shopt -s nullglob
    for d in "$STATE_DIR"/*-[0-9]*; do b=$(basename "$d"); stop "${b%-*}" "${b##*-}"; done ;;
  status) status ;;
  url) url_of "$@" ;;
  *) sed -n '2,27p' "$0"; exit 2 ;;
esac
