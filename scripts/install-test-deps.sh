#!/usr/bin/env bash
# Install what the integration tests need, and nothing that is already there (idempotent).
#
#   scripts/install-test-deps.sh
#
# - fuse3:          fusermount3, which a non-root user needs to unmount, and which the tests use to unmount;
# - apache2, apache2-utils: the packaged WebDAV server (mod_dav_fs) the tests run against besides the in-process one
#                   (tests/common/apache.rs starts it through scripts/webdav-servers.sh);
# - nginx, libnginx-mod-http-dav-ext, lighttpd, lighttpd-mod-webdav: two more packaged WebDAV servers the FUSE write
#                   tests run against (tests/common/nginx.rs, lighttpd.rs, started through scripts/webdav-servers.sh);
# - curl:           scripts/webdav-servers.sh checks that a server answers PROPFIND with it;
# - rsync:          the write tests sync trees into the mount with it;
# - vim:            tests/fuse_data_safety.rs saves files with it as an editor does (open, ftruncate, write, fsync);
# - util-linux (mount, umount, findmnt, runuser) and systemd (systemd-analyze): tests/mount_helper.rs mounts through
#                   mount(8) and checks the example units of docs/fstab.md with `systemd-analyze verify`;
# - openssl:        tests/common/hostile.rs makes a CA and a server certificate for the TLS tests with it;
# - passwd (useradd): tests/hostile_local_files.rs creates an unprivileged user to try reading our files as;
# - WsgiDAV (PyPI, in a venv at target/test-tools/venv-wsgidav, with python3-venv from Debian if python3 lacks it):
#                   the server that lets clients set modification times (tests/common/wsgidav.rs);
# - fsx (crates.io, built into target/test-tools/bin): tests/fuse_fsx.rs;
# - pjdfstest (crates.io, built into target/test-tools/bin): tests/fuse_pjdfstest.rs.
# rclone is not needed (the demo uses Apache). Needs root (or sudo) only when a Debian package is missing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${WSGIDAV_VENV:-$repo/target/test-tools/venv-wsgidav}

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
[[ -x /usr/sbin/apache2 ]] || need+=(apache2)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
[[ -x /usr/sbin/nginx ]] || need+=(nginx)
[[ -f /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ]] || need+=(libnginx-mod-http-dav-ext)
[[ -x /usr/sbin/lighttpd ]] || need+=(lighttpd)
[[ -f /usr/lib/lighttpd/mod_webdav.so ]] || need+=(lighttpd-mod-webdav)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v git >/dev/null 2>&1 || need+=(git)
command -v mkfifo >/dev/null 2>&1 || need+=(coreutils)
command -v vim >/dev/null 2>&1 || need+=(vim)
{ command -v findmnt && command -v runuser; } >/dev/null 2>&1 || need+=(util-linux)
command -v mount >/dev/null 2>&1 || need+=(mount)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v useradd >/dev/null 2>&1 || need+=(passwd)
if [[ ! -x $venv/bin/wsgidav ]] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3 python3-venv)
fi

if ((${#need[@]} == 0)); then
  echo "install-test-deps: fuse3, apache2, apache2-utils, nginx (+ dav-ext), lighttpd (+ mod_webdav), curl, rsync, vim, util-linux, mount, systemd, openssl, passwd and python3-venv are already installed"
else
  sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || { echo "install-test-deps: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "install-test-deps: installing ${need[*]}"
  "${sudo[@]}" apt-get update -qq
  # In containers Debian's policy-rc.d keeps the packaged apache2 service from starting; harmless either way, since the
  # tests run their own Apache instances with their own config, ports and pid files.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [[ -x $venv/bin/wsgidav ]]; then
  echo "install-test-deps: WsgiDAV is already installed in $venv"
else
  echo "install-test-deps: installing WsgiDAV and cheroot (pip) into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'wsgidav>=4.3,<5' 'cheroot>=10'
fi
# fsx (crates.io, asomers/fsx-rs): the random read/write/mmap/truncate exerciser tests/fuse_fsx.rs runs on the mount.
tools=$repo/target/test-tools
if [[ -x $tools/bin/fsx ]]; then
  echo "install-test-deps: fsx is already installed in $tools/bin"
else
  echo "install-test-deps: installing fsx (cargo install, about a minute) into $tools/bin"
  cargo install --quiet --locked --root "$tools" fsx@0.3.2
fi
# pjdfstest (crates.io, saidsay-so/pjdfstest): the POSIX conformance suite tests/fuse_pjdfstest.rs runs on the mount.
if [[ -x $tools/bin/pjdfstest ]]; then
  echo "install-test-deps: pjdfstest is already installed in $tools/bin"
else
  echo "install-test-deps: installing pjdfstest (cargo install, about a minute) into $tools/bin"
  cargo install --quiet --locked --root "$tools" pjdfstest@0.2.2
fi
echo "install-test-deps: done"
