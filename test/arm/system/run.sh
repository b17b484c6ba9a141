#!/usr/bin/env bash
# The arm64 daemon bundle in a full arm64 system under emulation (npm run test:arm:system; README "Tests").
#
# qemu-system-aarch64 (TCG) boots Debian's arm64 kernel into a minimal Debian bookworm arm64 system with
# systemd and udev (test/arm/system/setup.sh builds it once into ~/.cache/remote-usb/arm-system). Inside,
# test/arm/system/guest.sh runs `remote-usb-server install` from this checkout's
# out/package/remote-usb-server-<version>-linux-arm64.tar.gz, so systemd starts the daemon from the installed
# unit, and makes a configfs gadget (SourceSink + Loopback) on dummy_hcd that the installed udev rule gives
# to the service user. On the host, out/test/arm/system/host.js pairs an x64 client with the code install
# printed, over a tap link with the guest (root, /dev/net/tun), claims the gadget, sends 4 MiB through the Loopback function
# and checks it comes back byte-identical, and prints bulk MB/s and control round trip beside an x64 daemon's
# on this host in the same run. No timing is asserted. Last line: "N passed, N failed"; exit 1 on a failure.
#
# Artifacts: test-artifacts/arm-system/ (console.log, host.log, share/{results,guest,install.out,journal*,dmesg}.log).
# Environment: REMOTE_USB_ARM_SYSTEM_TIMEOUT (s, default 1500) bounds the guest; REMOTE_USB_ARM_SYSTEM_CACHE
# as in setup.sh.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
A=$REPO/test-artifacts/arm-system
CACHE=${REMOTE_USB_ARM_SYSTEM_CACHE:-$HOME/.cache/remote-usb/arm-system}
export REMOTE_USB_ARM_SYSTEM_CACHE=$CACHE
TIMEOUT=${REMOTE_USB_ARM_SYSTEM_TIMEOUT:-1500}
T0=$(date +%s)
log() { echo "[arm-system] $*"; }
die() { echo "[arm-system] ERROR: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

VERSION=$(node -p "require('$REPO/package.json').version") || die "cannot read the version from package.json"
TGZ=$REPO/out/package/remote-usb-server-$VERSION-linux-arm64.tar.gz
[ -f "$TGZ" ] || die "$TGZ is missing: build the arm64 bundle first with
    npm run cross-build && npm run package:server -- --target linux-arm64"
for f in dist/remote-usb.js dist/server.js out/test/arm/system/host.js; do
  [ -f "$REPO/$f" ] || die "$f is missing: run this through npm run test:arm:system (node esbuild.mjs --arm-system)"
done

bash "$HERE/setup.sh" || die "setup failed"
T_SETUP=$(( $(date +%s) - T0 ))
KVER=$(sed -n 's/^kernel //p' "$CACHE/stamp")

rm -rf "$A" && mkdir -p "$A/share"
cp "$TGZ" "$A/share/bundle.tar.gz" && cp "$HERE/guest.sh" "$A/share/guest.sh" || die "cannot stage the share"
: > "$A/share/results.log"
# The network: a tap link between this host and the guest, no NAT (qemu's user-net UDP forward lost the
# daemon's answers shortly after a first connection worked, see the README, Tests): the guest's address is the one
# in the ticket install prints, so the client uses that ticket as it is.
NET=${REMOTE_USB_ARM_SYSTEM_NET:-192.168.249}
TAP=ruarm$(( $$ % 100000 ))
command -v ip >/dev/null || die "'ip' (iproute2) is needed for the tap link"
ip -4 route show | grep -q "^$NET\." && die "$NET.0/24 is already routed here; pick another with REMOTE_USB_ARM_SYSTEM_NET"
ip tuntap add dev "$TAP" mode tap && ip addr add "$NET.1/24" dev "$TAP" && ip link set "$TAP" up || die "cannot make the tap device $TAP (root and /dev/net/tun needed)"
printf 'HOST=%s\nADDR=%s\n' "$NET.1" "$NET.2/24" > "$A/share/net.env"
log "booting the arm64 guest (kernel $KVER, TCG, 2 vCPUs, 2 GiB; tap $TAP: host $NET.1, guest $NET.2); console: $A/console.log"
T_BOOT=$(date +%s)
nice -n 19 qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 2048 -display none -monitor none -no-reboot \
  -serial "file:$A/console.log" \
  -kernel "$CACHE/linux/boot/vmlinuz-$KVER" -initrd "$CACHE/initramfs.cpio.gz" -append "console=ttyAMA0 panic=-1 loglevel=4 systemd.mask=systemd-networkd.service systemd.mask=systemd-networkd-wait-online.service" \
  -drive "file=$CACHE/rootfs.img,if=none,id=hd0,format=raw,snapshot=on" -device virtio-blk-pci,drive=hd0 \
  -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" -device virtio-net-pci,netdev=n0 \
  -fsdev "local,id=fs0,path=$A/share,security_model=none" -device virtio-9p-pci,fsdev=fs0,mount_tag=rutest \
  > "$A/qemu.log" 2>&1 &
QEMU=$!
stop_qemu() { kill "$QEMU" 2>/dev/null; wait "$QEMU" 2>/dev/null; ip link del "$TAP" 2>/dev/null; }
trap 'stop_qemu' EXIT

deadline=$(( T_BOOT + TIMEOUT ))
until [ -f "$A/share/ready" ] || [ -f "$A/share/guest.done" ] || ! kill -0 "$QEMU" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; do sleep 1; done
T_READY=$(( $(date +%s) - T_BOOT ))
HOST_FAIL=0
if [ -f "$A/share/ready" ]; then
  log "guest ready after ${T_READY} s (booted, installed, serving, gadget made): host client"
  if [ "${REMOTE_USB_ARM_SYSTEM_HOLD:-0}" = 1 ]; then  # debugging: the guest waits; share/cmd.sh runs there
    log "holding until $A/share/host.go exists; bench at $NET.2:47100; drop guest commands as $A/share/cmd.sh"
    until [ -f "$A/share/host.go" ] || ! kill -0 "$QEMU" 2>/dev/null; do sleep 2; done
  fi
  timeout 900 node --enable-source-maps "$REPO/out/test/arm/system/host.js" "$A/share" 2>&1 | tee "$A/host.log"
  [ "${PIPESTATUS[0]}" = 0 ] || HOST_FAIL=1
else
  log "the guest never got ready (qemu $(kill -0 "$QEMU" 2>/dev/null && echo running || echo exited), ${T_READY} s); last console lines:"
  tail -40 "$A/console.log" | sed 's/^/  console| /'
  HOST_FAIL=1
fi
touch "$A/share/host.done"
until [ -f "$A/share/guest.done" ] || ! kill -0 "$QEMU" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; do sleep 1; done
# the guest powers itself off after guest.done
for _ in $(seq 120); do kill -0 "$QEMU" 2>/dev/null || break; sleep 1; done
kill -0 "$QEMU" 2>/dev/null && log "guest did not power off: stopping qemu"
stop_qemu; trap - EXIT
T_TOTAL=$(( $(date +%s) - T0 ))

# ---- summary
grep -h '^RUTEST ' "$A/share/results.log" "$A/host.log" 2>/dev/null > "$A/results.log"
echo
echo "== arm64 system results"
grep -E '^RUTEST (PASS|FAIL|INFO)' "$A/results.log" | sed 's/^RUTEST //'
PASSED=$(grep -c '^RUTEST PASS' "$A/results.log")
FAILED=$(grep -c '^RUTEST FAIL' "$A/results.log")
if [ "$HOST_FAIL" = 1 ] && [ "$FAILED" = 0 ]; then FAILED=1; echo "FAIL host: the host half did not complete (see above)"; fi
[ -f "$A/share/guest.done" ] || { FAILED=$((FAILED + 1)); echo "FAIL guest: guest.sh did not finish (see $A/console.log)"; }
grep -q 'PASS client.pair' "$A/results.log" || { [ "$FAILED" -gt 0 ] || FAILED=1; }
echo
echo "== speed (printed, not asserted)"
grep '^RUTEST METRIC' "$A/results.log" | sed 's/^RUTEST METRIC /  /'
echo "== times: setup ${T_SETUP} s, boot to ready ${T_READY} s, total ${T_TOTAL} s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
