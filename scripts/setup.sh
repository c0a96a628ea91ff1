#!/usr/bin/env bash
# One idempotent set-up step behind `npm start` and `npm test`: Debian packages, npm packages,
# the TypeScript build and the guest assets (kernel, initramfs, guest image). Each part is
# skipped when already done, so running it again costs about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

# qemu-system-x86: the VMM; busybox-static: the guest's shell tools; e2fsprogs: mkfs.ext4 -d for
# the guest image; util-linux: nsenter (sandbox network set-up); cpio: initramfs checks in the
# tests; iproute2 and nftables: sandbox networks (uplinks, tap devices, egress rules);
# lz4/xz-utils/zstd: unpacking the kernel from its bzImage so QEMU can boot it uncompressed;
# gcc/libc6-dev: the static in-guest container init (guest-assets/cinit.c) and the host helpers
# (native/: the VMM jail, xattrs); containerd and podman: the OCI runtime's tests drive them;
# python3: the host half of terminal mode (src/oci/pty-bridge.py passes a pty over a socket);
# qemu-utils: qemu-img for the per-sandbox copy-on-write layer over a shared image root
# filesystem; docker-registry, skopeo and apache2-utils (htpasswd): the image tests run a real
# registry on loopback and push test images to it; openssl: the token server's signing certificate;
# postgresql: the platform store's contract tests run a real PostgreSQL server on loopback.
PKGS=(qemu-system-x86 qemu-utils busybox-static e2fsprogs util-linux cpio iproute2 nftables lz4 xz-utils zstd gcc
  libc6-dev containerd podman python3 docker-registry skopeo apache2-utils openssl postgresql)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
apt_updated=0
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  apt_updated=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The guest kernel comes from Debian's cloud kernel package (downloaded, not installed); its name
# is resolved from the package lists, which a fresh machine may not have yet.
if [ "$apt_updated" = 0 ] && ! apt-cache depends linux-image-cloud-amd64 >/dev/null 2>&1; then
  if ! ls "${ISOLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isola}"/debs/linux-image-*.deb >/dev/null 2>&1; then
    log "refreshing apt package lists"
    $SUDO apt-get update -qq
  fi
fi

# npm packages: reinstall only when package-lock.json changed since the last install.
stamp=node_modules/.isola-lock-stamp
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > "$stamp"
fi

# TypeScript build (incremental: fast when nothing changed).
npx tsc -p tsconfig.json

# Guest assets: content-addressed, rebuilt only when an input changed.
node dist/src/assets/build.js
