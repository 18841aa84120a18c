#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: system packages drctl and its tests use, npm
# dependencies, and the build. Safe to run again: it only installs what is missing.
#   scripts/setup.sh          packages for drctl and the test suite
#   scripts/setup.sh --bench  also the peer tools the benchmark compares against
set -euo pipefail
cd "$(dirname "$0")/.."

# command → Debian package that provides it
declare -A NEED=(
  [qemu-img]=qemu-utils     # image map / convert for VM-level backups of local images
  [mkfs.ext4]=e2fsprogs     # tests: a small loop-mounted volume that runs out of space
  [losetup]=mount
  [python3]=python3         # benchmark dataset generator
  [restic]=restic           # tests: retention is checked against restic's own forget
  [rsync]=rsync             # tests: the bench-dataset test copies trees with rsync
  # iSCSI targets: tgtd serves test LUNs; the userspace attach is qemu-storage-daemon (qemu-system-common)
  # with the libiscsi block driver (qemu-block-extra) exported through FUSE (fuse3); open-iscsi is
  # the kernel attach strategy; xfsprogs for filesystem: xfs
  [tgtd]=tgt
  [qemu-storage-daemon]=qemu-system-common
  [fusermount3]=fuse3
  [mkfs.xfs]=xfsprogs
  [iscsiadm]=open-iscsi
  # libvirt hosts: tests run libvirtd + QEMU (TCG) with a tiny guest, reached through sshd
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-nbd]=qemu-utils
  [virsh]=libvirt-clients
  [libvirtd]=libvirt-daemon-system
  [busybox]=busybox-static  # guest initramfs (scripts/lab-guest.sh)
  [qemu-ga]=qemu-guest-agent
  [cpio]=cpio
  [sshd]=openssh-server
  [ssh-keygen]=openssh-client
)
# a file, not a command: qemu's libiscsi block driver
[ -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ] || ls /usr/lib/*/qemu/block-iscsi.so >/dev/null 2>&1 || NEED+=([qemu-block-iscsi]=qemu-block-extra)
if [ "${1:-}" = "--bench" ]; then
  NEED+=([borg]=borgbackup [bc]=bc [rsync]=rsync [zstd]=zstd)
  [ -x /usr/bin/time ] || NEED+=([gnu-time]=time)
fi

missing=()
for cmd in "${!NEED[@]}"; do
  if [ "$cmd" = gnu-time ] || [ "$cmd" = qemu-block-iscsi ] || ! command -v "$cmd" >/dev/null 2>&1; then missing+=("${NEED[$cmd]}"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when the lock file changed since the last install (zstd-napi compiles ~1 min).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
   || [ ! -f node_modules/zstd-napi/build/Release/binding.node ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

# The lab guest for the libvirt tests (kernel from the linux-image package; cached, built once).
if command -v qemu-ga >/dev/null && command -v busybox >/dev/null; then
  bash scripts/lab-guest.sh >/dev/null || echo "setup: lab guest build failed (libvirt tests will fail)" >&2
fi

echo "setup: build" >&2
rm -rf dist
npx tsc -p tsconfig.json
chmod +x dist/cli/main.js
