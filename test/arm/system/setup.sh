#!/usr/bin/env bash
# Full arm64 system under emulation, host side: one-time, idempotent setup (the README, Tests: npm run test:arm:system).
#
#  1. apt packages: qemu-system-arm (qemu-system-aarch64), debootstrap, e2fsprogs (mke2fs -d), cpio, kmod;
#     the arm64 architecture in dpkg so that apt-get download finds arm64 packages.
#  2. Debian's arm64 kernel (linux-image-arm64 of this host's suite), apt-get download + dpkg -x, not installed.
#  3. A busybox initramfs (busybox-static:arm64) that loads virtio-pci, virtio-blk and ext4 and switch_roots
#     into the root file system on /dev/vda.
#  4. A minimal Debian bookworm arm64 system with systemd and udev: debootstrap --foreign on the host, the
#     kernel's modules copied in, then its second stage run once inside the booted arm64 guest (TCG, a few
#     minutes). The result is one ext4 image; every test boot uses it with snapshot=on, so it stays pristine.
#
# Everything lands in $REMOTE_USB_ARM_SYSTEM_CACHE (default ~/.cache/remote-usb/arm-system); a stamp holds
# the kernel version, the package list and RECIPE (bump it when the recipe changes: that rebuilds). Needs root when
# something is missing (CI runs as root). REMOTE_USB_ARM_SYSTEM_REFRESH=1 rebuilds everything.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${REMOTE_USB_ARM_SYSTEM_CACHE:-$HOME/.cache/remote-usb/arm-system}
SUITE=bookworm
MIRROR=${REMOTE_USB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# what `remote-usb-server install` and the test need in the guest, on top of minbase (which has passwd,
# util-linux, bash): systemd as PID 1, udev for the rule, kmod to load the gadget modules
INCLUDE=systemd,systemd-sysv,udev,kmod,libudev1,iproute2

log() { echo "[arm-system-setup] $*"; }
die() { echo "[arm-system-setup] ERROR: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (run as root, or run this script once with sudo)"; }
NICE=(nice -n 19)

# ---------------------------------------------------------------------------------------------- 1. apt
PACKAGES=(qemu-system-arm debootstrap e2fsprogs cpio kmod)
missing=()
for p in "${PACKAGES[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [ "${st:0:2}" = ii ] || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
  need_root "installing ${missing[*]}"
  log "apt-get install -y --no-install-recommends ${missing[*]}"
  apt-get update -q >/dev/null || die "apt-get update failed"
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null || die "apt-get install failed"
fi
for t in qemu-system-aarch64 debootstrap mke2fs debugfs cpio depmod modprobe dpkg; do
  command -v "$t" >/dev/null || die "'$t' not found on PATH"
done

mkdir -p "$CACHE"
# bump RECIPE when what is built below changes (the initramfs init, the files written into the system)
RECIPE=1
STAMP_WANT="recipe $RECIPE $SUITE $INCLUDE"
if [ "${REMOTE_USB_ARM_SYSTEM_REFRESH:-0}" != 1 ] && [ -f "$CACHE/stamp" ] && [ "$(sed -n 1p "$CACHE/stamp")" = "$STAMP_WANT" ] \
  && [ -f "$CACHE/rootfs.img" ] && [ -f "$CACHE/initramfs.cpio.gz" ] && KVER=$(sed -n 's/^kernel //p' "$CACHE/stamp") \
  && [ -f "$CACHE/linux/boot/vmlinuz-$KVER" ]; then
  log "ready (cached): kernel $KVER, $CACHE/rootfs.img"
  exit 0
fi

# ---------------------------------------------------------------------------------------------- 2. kernel
need_root "building the arm64 system"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "dpkg --add-architecture arm64"
  dpkg --add-architecture arm64
  apt-get update -q >/dev/null || die "apt-get update failed"
fi
if ! apt-cache show linux-image-arm64:arm64 >/dev/null 2>&1 || ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then
  log "apt-get update (package lists do not know linux-image-arm64:arm64)"
  apt-get update -q >/dev/null || die "apt-get update failed"
fi
PKG=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
PKG=${PKG%:arm64}
[ -n "$PKG" ] || die "cannot resolve linux-image-arm64:arm64 to a versioned kernel package (apt-cache depends)"
log "kernel package: $PKG:arm64, busybox-static:arm64 (apt-get download + dpkg -x, not installed)"
DL=$CACHE/deb
rm -rf "$DL" "$CACHE/linux" "$CACHE/busybox" && mkdir -p "$DL"
(cd "$DL" && apt-get download -q "$PKG:arm64" busybox-static:arm64 2>&1 | grep -v "couldn't be accessed by user '_apt'" || true)
DEB=$(ls "$DL"/"$PKG"_*_arm64.deb 2>/dev/null | head -1); BB=$(ls "$DL"/busybox-static_*_arm64.deb 2>/dev/null | head -1)
[ -n "$DEB" ] && [ -n "$BB" ] || die "apt-get download of $PKG:arm64 / busybox-static:arm64 failed"
dpkg -x "$DEB" "$CACHE/linux" && dpkg -x "$BB" "$CACHE/busybox" || die "dpkg -x failed"
KVER=$(ls "$CACHE/linux/lib/modules" | head -1)
[ -n "$KVER" ] && [ -f "$CACHE/linux/boot/vmlinuz-$KVER" ] || die "unexpected layout in $DEB"
depmod -b "$CACHE/linux" "$KVER" || die "depmod failed"
rm -rf "$DL"
for m in virtio_pci virtio_blk ext4 virtio_net 9p 9pnet_virtio dummy_hcd libcomposite usb_f_ss_lb; do
  modprobe -d "$CACHE/linux" -S "$KVER" --show-depends "$m" >/dev/null 2>&1 || die "kernel $KVER lacks module $m"
done
log "kernel $KVER"

# ---------------------------------------------------------------------------------------------- 3. initramfs
R=$CACHE/initramfs
rm -rf "$R" && mkdir -p "$R"/{bin,mod,proc,sys,dev,newroot}
cp "$CACHE/busybox/bin/busybox" "$R/bin/busybox"
for m in virtio_pci virtio_blk ext4; do
  modprobe -d "$CACHE/linux" -S "$KVER" --show-depends "$m" || die "modprobe --show-depends $m failed"
done | sed -n 's/^insmod \(.*\.ko\(\.[a-z]*\)\?\)\( .*\)\?$/\1/p' | awk '!seen[$0]++' | while IFS= read -r f; do
  cp "$f" "$R/mod/" && basename "$f" >> "$R/modules.list"
done
cat > "$R/init" <<'EOI'
#!/bin/busybox sh
# arm-system initramfs: virtio-blk root (ext4, rw: the test boots use snapshot=on), then $ru_init (default systemd)
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fail() { echo "RU-INITRAMFS-FAIL: $*"; echo o > /proc/sysrq-trigger; sleep 5; poweroff -f; }
for m in $(cat /modules.list); do insmod /mod/$m || echo "initramfs: insmod $m failed"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || fail "mount of /dev/vda failed"
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot "${ru_init:-/sbin/init}"
EOI
chmod 0755 "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$CACHE/initramfs.cpio.gz" || die "cpio failed"

# ---------------------------------------------------------------------------------------------- 4. root file system
ROOT=$CACHE/rootfs.tmp
rm -rf "$ROOT" "$CACHE/rootfs.img" "$CACHE/rootfs.img.tmp"
log "debootstrap --foreign --arch=arm64 --variant=minbase --include=$INCLUDE $SUITE (first stage, on the host)"
"${NICE[@]}" debootstrap --foreign --arch=arm64 --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT" "$MIRROR" > "$CACHE/debootstrap-1.log" 2>&1 \
  || { tail -20 "$CACHE/debootstrap-1.log"; die "debootstrap first stage failed (log: $CACHE/debootstrap-1.log)"; }
mkdir -p "$ROOT/lib/modules"
cp -a "$CACHE/linux/lib/modules/$KVER" "$ROOT/lib/modules/"
echo remote-usb-arm > "$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 remote-usb-arm\n' > "$ROOT/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$ROOT/etc/fstab"
mkdir -p "$ROOT/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' > "$ROOT/etc/systemd/network/20-wired.network"
# The test hook: when a 9p share tagged 'rutest' is there (test/arm/system/run.sh), run its guest.sh.
mkdir -p "$ROOT/usr/local/sbin"
cat > "$ROOT/usr/local/sbin/rutest-hook" <<'EOH'
#!/bin/sh
modprobe 9pnet_virtio 2>/dev/null; modprobe 9p 2>/dev/null
mkdir -p /run/rutest
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rutest /run/rutest 2>/dev/null || exit 0
[ -f /run/rutest/guest.sh ] || exit 0
exec /bin/bash /run/rutest/guest.sh /run/rutest
EOH
chmod 0755 "$ROOT/usr/local/sbin/rutest-hook"
cat > "$ROOT/etc/systemd/system/rutest.service" <<'EOU'
[Unit]
Description=Remote USB arm-system test hook (runs guest.sh from the 9p share 'rutest')
Wants=network-online.target
After=network-online.target systemd-udevd.service

[Service]
Type=simple
ExecStart=/usr/local/sbin/rutest-hook
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOU
cat > "$ROOT/rutest-stage2" <<'EOS'
#!/bin/sh
# PID 1 of the one-time second-stage boot
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys
echo "RU-STAGE2 start $(date)"
if /debootstrap/debootstrap --second-stage; then
  systemctl enable systemd-networkd.service rutest.service
  passwd -d root
  rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/*
  echo "RU-STAGE2 done $(date)" > /rutest-stage2.ok
  echo "RU-STAGE2-OK"
else
  echo "RU-STAGE2-FAIL"; tail -30 /debootstrap/debootstrap.log
fi
sync; mount -o remount,ro / 2>/dev/null; sync
echo o > /proc/sysrq-trigger; sleep 30
EOS
chmod 0755 "$ROOT/rutest-stage2"
log "mke2fs -d (ext4 image, sparse, 4 GiB)"
"${NICE[@]}" mke2fs -q -t ext4 -L root -d "$ROOT" "$CACHE/rootfs.img.tmp" 4G >/dev/null || die "mke2fs -d failed"
rm -rf "$ROOT"

log "second stage inside the arm64 guest (qemu-system-aarch64, TCG; a few minutes; console: $CACHE/stage2-console.log)"
t0=$(date +%s)
timeout 2400 "${NICE[@]}" qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 2048 -display none -monitor none -no-reboot \
  -serial "file:$CACHE/stage2-console.log" \
  -kernel "$CACHE/linux/boot/vmlinuz-$KVER" -initrd "$CACHE/initramfs.cpio.gz" \
  -append "console=ttyAMA0 panic=-1 loglevel=4 ru_init=/rutest-stage2" \
  -drive "file=$CACHE/rootfs.img.tmp,if=none,id=hd0,format=raw,cache=unsafe" -device virtio-blk-pci,drive=hd0 \
  -nic none || die "qemu (second stage) failed or timed out after 40 min; see $CACHE/stage2-console.log"
grep -q RU-STAGE2-OK "$CACHE/stage2-console.log" || { tail -40 "$CACHE/stage2-console.log"; die "second stage failed; see $CACHE/stage2-console.log"; }
debugfs -R 'stat /rutest-stage2.ok' "$CACHE/rootfs.img.tmp" 2>/dev/null | grep -q 'Type: regular' || die "second stage did not leave /rutest-stage2.ok in the image"
log "second stage done in $(( $(date +%s) - t0 )) s"
mv "$CACHE/rootfs.img.tmp" "$CACHE/rootfs.img"
printf '%s\nkernel %s\n' "$STAMP_WANT" "$KVER" > "$CACHE/stamp"
log "ready: kernel $KVER, $CACHE/rootfs.img ($(du -h "$CACHE/rootfs.img" | cut -f1) used)"
