#!/usr/bin/env bash
# Real-kernel test harness, host side: one-time, idempotent setup.
#
#  1. apt packages the host (and, through the 9p-shared root, the guest) needs: qemu, busybox-static,
#     usbip tools, kmod, cpio, dbus + polkitd + pkexec (for the pkexec attach tests), ...
#  2. Debian's linux-image-amd64 kernel, fetched with `apt-get download` and unpacked with `dpkg -x`
#     (NOT installed) into $REPO/build/kernel/linux/, plus depmod.
#  3. A tiny busybox initramfs ($REPO/build/kernel/initramfs.cpio.gz) that mounts the host's / over 9p
#     (read-only) under a tmpfs overlay and switch_roots into test/kernel/guest-init.sh.
#
# Needs root only when something is missing (CI runs as root). Re-running it is cheap when all is in place.
# Environment: KTEST_REFRESH_KERNEL=1 re-downloads the kernel; KTEST_BUILD_DIR overrides build/kernel.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD=${KTEST_BUILD_DIR:-$REPO/build/kernel}

log() { echo "[kernel-setup] $*"; }
die() { echo "[kernel-setup] ERROR: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (run as root, or run this script once with sudo)"; }

# Packages the harness uses on the host and inside the guest (the guest runs the host's userland).
PACKAGES=(
  qemu-system-x86 qemu-utils          # qemu-system-x86_64 (TCG), seabios comes as a dependency
  busybox-static                      # the initramfs' only binary
  usbip                               # usbip / usbipd (Linux's own USB/IP userland: the baseline)
  usbutils                            # lsusb (diagnostics in the guest)
  kmod                                # modprobe / depmod for the unpacked kernel
  cpio                                # building the initramfs
  bc                                  # arithmetic in shell scenarios
  procps                              # ps / pgrep / pkill (by pid) in the guest
  dbus-daemon dbus-bin                # system bus for polkitd in the guest
  polkitd pkexec                      # the pkexec vhci-attach path
)

# ---------------------------------------------------------------------------------------------- 1. apt
missing=()
for p in "${PACKAGES[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [ "${st:0:2}" = ii ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get update"
  apt-get update -q || die "apt-get update failed"
  log "apt-get install -y --no-install-recommends ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null || die "apt-get install failed"
  APT_UPDATED=1
else
  log "apt packages already installed: ${PACKAGES[*]}"
fi
for t in qemu-system-x86_64 usbip usbipd modprobe depmod cpio gzip dpkg; do
  command -v "$t" >/dev/null || die "'$t' not found on PATH after installing packages"
done
BUSYBOX=$(command -v busybox) || die "busybox not found"
if command -v ldd >/dev/null && ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is dynamically linked; the initramfs needs busybox-static"
fi

# ---------------------------------------------------------------------------------------------- 2. kernel
mkdir -p "$BUILD"
kernel_ok() {
  [ -f "$BUILD/linux.version" ] || return 1
  local v; v=$(cat "$BUILD/linux.version")
  [ -f "$BUILD/linux/boot/vmlinuz-$v" ] && [ -f "$BUILD/linux/lib/modules/$v/modules.dep" ]
}
if [ "${KTEST_REFRESH_KERNEL:-0}" = 1 ] || ! kernel_ok; then
  need_root "fetching the kernel package"
  if [ -z "${APT_UPDATED:-}" ] && ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
    log "apt-get update (package lists do not know linux-image-amd64)"
    apt-get update -q || die "apt-get update failed"
  fi
  PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$PKG" ] || die "cannot resolve linux-image-amd64 to a versioned kernel package (apt-cache depends)"
  log "kernel package: $PKG (apt-get download + dpkg -x, not installed)"
  rm -rf "$BUILD/deb" "$BUILD/linux.tmp"
  mkdir -p "$BUILD/deb"
  # apt-get download runs unsandboxed as root here; the '_apt' notice it may print is harmless.
  (cd "$BUILD/deb" && apt-get download -q "$PKG") || die "apt-get download $PKG failed"
  DEB=$(ls "$BUILD"/deb/"${PKG}"_*.deb 2>/dev/null | head -1)
  [ -n "$DEB" ] || die "downloaded .deb for $PKG not found in $BUILD/deb"
  dpkg -x "$DEB" "$BUILD/linux.tmp" || die "dpkg -x $DEB failed"
  KVER=$(ls "$BUILD/linux.tmp/lib/modules" | head -1)
  [ -n "$KVER" ] && [ -f "$BUILD/linux.tmp/boot/vmlinuz-$KVER" ] || die "unexpected layout in $DEB (no boot/vmlinuz-* / lib/modules/*)"
  log "depmod -b linux $KVER"
  depmod -b "$BUILD/linux.tmp" "$KVER" || die "depmod failed"
  rm -rf "$BUILD/linux" && mv "$BUILD/linux.tmp" "$BUILD/linux"
  echo "$KVER" > "$BUILD/linux.version"
  rm -f "$DEB"
  rm -f "$BUILD/initramfs.cpio.gz"   # modules inside it must match the kernel
else
  log "kernel already unpacked: $(cat "$BUILD/linux.version") in $BUILD/linux"
fi
KVER=$(cat "$BUILD/linux.version")
MODROOT=$BUILD/linux/lib/modules/$KVER
for m in vhci-hcd usbip-core usbip-host dummy_hcd libcomposite usb_f_acm cdc-acm ftdi_sio 9p overlay; do
  modprobe -d "$BUILD/linux" -S "$KVER" --show-depends "$m" >/dev/null 2>&1 || die "kernel $KVER lacks module $m"
done

# ---------------------------------------------------------------------------------------------- 3. initramfs
# The init is generic: everything run-specific (repo path, scenario, module dir) arrives in an env file
# whose host path is passed as ktest_env=... on the kernel command line (the kernel hands unknown
# key=value parameters to init as environment variables).
INIT_TEXT=$(cat <<'EOI'
#!/bin/busybox sh
# ktest initramfs init: host / over 9p (ro) + tmpfs overlay, then switch_root into guest-init.sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fail() { echo "KTEST-INITRAMFS-FAIL: $*"; echo o > /proc/sysrq-trigger; sleep 5; poweroff -f; }
for m in $(cat /modules.list); do insmod /mod/$m || echo "ktest-initramfs: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "9p mount of host / failed"
mount -t tmpfs -o size=${ktest_overlay_size:-2g},mode=0755 tmpfs /rw || fail "tmpfs failed"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay mount failed"
[ -n "$ktest_env" ] && [ -f "/newroot$ktest_env" ] || fail "ktest_env=$ktest_env missing (kernel command line / host path)"
set -a; . "/newroot$ktest_env"; set +a
KVER=$(uname -r)
[ -d "/newroot$KTEST_MODULES_DIR" ] || fail "module dir $KTEST_MODULES_DIR not visible in guest"
mkdir -p /newroot/lib/modules/$KVER
mount --bind "/newroot$KTEST_MODULES_DIR" /newroot/lib/modules/$KVER || fail "bind mount of modules failed"
for d in proc sys dev; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /bin/bash "$KTEST_REPO/test/kernel/guest-init.sh"
EOI
)
INITRAMFS=$BUILD/initramfs.cpio.gz
if [ -f "$INITRAMFS" ] && [ -f "$BUILD/initramfs/init" ] && [ "$(cat "$BUILD/initramfs/init")" = "$INIT_TEXT" ]; then
  log "initramfs up to date: $INITRAMFS"
else
  log "building initramfs (busybox + virtio/9p/overlay modules of $KVER)"
  R=$BUILD/initramfs
  rm -rf "$R" && mkdir -p "$R"/{bin,mod,proc,sys,dev,lower,rw,newroot}
  cp "$BUSYBOX" "$R/bin/busybox"
  : > "$R/modules.list"
  for m in virtio_pci 9pnet_virtio 9p overlay; do
    modprobe -d "$BUILD/linux" -S "$KVER" --show-depends "$m" || die "modprobe --show-depends $m failed"
  done | sed -n 's/^insmod \(.*\.ko\(\.[a-z]*\)\?\)\( .*\)\?$/\1/p' | awk '!seen[$0]++' | while IFS= read -r f; do
    cp "$f" "$R/mod/" && basename "$f" >> "$R/modules.list"
  done
  [ -s "$R/modules.list" ] || die "no modules collected for the initramfs"
  printf '%s\n' "$INIT_TEXT" > "$R/init" && chmod 0755 "$R/init"
  (cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRAMFS.tmp" || die "cpio failed"
  mv "$INITRAMFS.tmp" "$INITRAMFS"
  log "initramfs modules: $(tr '\n' ' ' < "$R/modules.list")"
fi

log "ready: kernel $KVER, vmlinuz $BUILD/linux/boot/vmlinuz-$KVER, initramfs $INITRAMFS, node $(command -v node || echo MISSING)"
