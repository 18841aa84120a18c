#!/usr/bin/env bash
# Builds the tiny Linux test guest once into ~/.cache/drctl-lab (or $DRCTL_LAB_CACHE):
#   vmlinuz     a Debian distribution kernel (from the linux-image package, no network beyond apt)
#   initrd.gz   busybox-static + qemu-guest-agent (and its libraries) + virtio/ext4 modules;
#               /init mounts /dev/vda (ext4) at /data and runs qemu-ga on the agent channel
#   data.qcow2  a 128 MiB virtio data disk (ext4, a little data on it) to copy per test
# Prints the cache folder. Idempotent: a complete cache is reused (delete it to rebuild).
set -euo pipefail
CACHE=${DRCTL_LAB_CACHE:-$HOME/.cache/drctl-lab}
mkdir -p "$CACHE"
cd "$CACHE"
if [ -f vmlinuz ] && [ -f initrd.gz ] && [ -f data.qcow2 ] && [ -f .complete ]; then echo "$CACHE"; exit 0; fi

for c in busybox qemu-ga cpio qemu-img; do
  command -v "$c" >/dev/null || { echo "lab-guest: $c is missing (run scripts/setup.sh)" >&2; exit 1; }
done

# Kernel: newest linux-image-*-amd64 the apt lists know; the .deb is unpacked, not installed.
if [ ! -d k/boot ]; then
  deb=$(ls linux-image-*-amd64_*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
    if [ -z "$pkg" ]; then
      apt-get update -qq >/dev/null 2>&1 || true
      pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
    fi
    [ -n "$pkg" ] || { echo "lab-guest: cannot find a linux-image package (apt-get update?)" >&2; exit 1; }
    apt-get download "$pkg" >/dev/null 2>&1
    deb=$(ls linux-image-*-amd64_*.deb | head -n1)
  fi
  rm -rf k && mkdir k && dpkg-deb -x "$deb" k
fi
cp k/boot/vmlinuz-* vmlinuz
MODDIR=$(echo k/lib/modules/*)

rm -rf root && mkdir -p root/{bin,sbin,dev,proc,sys,data,tmp,run,lib/modules,var/run}
cp /bin/busybox root/bin/busybox
for a in sh mount umount mkdir cat ls sleep sync insmod echo dd cmp sha256sum rm cp mv poweroff reboot halt grep head tail stat ln chmod true false; do
  ln -sf busybox "root/bin/$a"
done
cp /usr/sbin/qemu-ga root/sbin/qemu-ga
for lib in $(ldd /usr/sbin/qemu-ga | awk '/=>/{print $3} /ld-linux/{print $1}'); do
  mkdir -p "root$(dirname "$lib")"
  cp -L "$lib" "root$lib"
done
mkdir -p root/lib64 && cp -L /lib64/ld-linux-x86-64.so.2 root/lib64/
# Dependency order (no depmod/modprobe in the guest).
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk virtio_console crc32c_generic crc16 mbcache jbd2 ext4; do
  f=$(find "$MODDIR" -name "$m.ko" | head -n1)
  [ -n "$f" ] && cp "$f" "root/lib/modules/$m.ko" && echo "$m" >> root/lib/modules/order
done

cat > root/init <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 /dev/vda /data && echo "drctl-lab: /data mounted" > /dev/console
port=
i=0
while [ -z "$port" ] && [ $i -lt 50 ]; do
  for n in /sys/class/virtio-ports/*; do
    [ "$(cat $n/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/$(basename $n)
  done
  [ -n "$port" ] || { sleep 0.1; i=$((i+1)); }
done
echo "drctl-lab: agent on $port" > /dev/console
while true; do /sbin/qemu-ga -m virtio-serial -p "$port" -t /run 2>/dev/console; sleep 1; done
EOF
chmod +x root/init
(cd root && find . | cpio -o -H newc --quiet | gzip -1) > initrd.gz

if [ ! -f data.qcow2 ]; then
  # busybox mke2fs, not mkfs.ext4: mke2fs scans every loop device for "in use" and hangs in
  # D state when one is backed by a stalled FUSE file. The guest mounts it with the ext4 driver.
  truncate -s 128M data.raw
  busybox mke2fs -F -L drctl-data data.raw >/dev/null
  qemu-img convert -f raw -O qcow2 data.raw data.qcow2
  rm -f data.raw
fi
rm -rf root
touch .complete
echo "$CACHE"
