#!/bin/bash
# ktest-timeout: 300
# ktest-ftdi: none
#
# Our daemon with its REAL `usb` backend (not usbip-host) serving the configfs CDC-ACM gadget, and the real
# client core over real Iroh on loopback: list (with kernel driver), claim (cdc_acm detached), control IN/OUT,
# SET_CONFIGURATION as a host operation, 1 MiB bulk each way byte-identical; then, watched through usbmon:
# 16 IN URBs queued at the host controller at once, a burst of whole packets followed by silence arriving
# whole, cancel and timeout handing over partial data, URB_ZERO_PACKET; release (cdc_acm back).
. "$KTEST_LIB"
W=/run/ktest/ours-real
mkdir -p "$W/state" "$W/client"
load_modules || exit 1
# usbmon: the guest program counts the URBs queued at the bench's host controller
modprobe usbmon || ktest_fail modprobe.usbmon "modprobe usbmon failed"
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
make_acm_gadget || exit 1
tty_raw "$ACM_GADGET_TTY"

PORT=47310
bench_config "$W/server.toml" "$PORT" "$W/state"
NODE=${KTEST_NODE:-node}
SERVER="$NODE $KTEST_REPO/dist/server.js"
CLIENT="$NODE $KTEST_REPO/dist/remote-usb.js"
$SERVER list -c "$W/server.toml" | sed 's/^/  /'
start_bench real "$W/server.toml" "$W/daemon.log"
ktest_pass real.daemon_start "$(grep -o 'serving as [0-9a-f]\{10\}' "$W/daemon.log")"
BENCH_ID=$($SERVER id -c "$W/server.toml")
$SERVER allow "$($CLIENT id --key-dir "$W/client")" --name ktest -c "$W/server.toml" >/dev/null

timeout 200 "${KTEST_NODE:-node}" "$KTEST_REPO/out/test/kernel/guest/real-backend.js" "$BENCH_ID@127.0.0.1:$PORT" "$W/client" "$ACM_LOCAL_BUSID" "$ACM_GADGET_TTY" 1048576 \
  | while IFS= read -r line; do
      case $line in KTEST\ *) ktest_emit ${line#KTEST } ;; *) echo "  $line" ;; esac
    done
[ "${PIPESTATUS[0]}" = 124 ] && ktest_fail real.client_timeout "the guest client program did not finish within 200 s"

# Hot-plug where no udevd runs (this guest has none): unplug the board and plug it in again; the daemon's
# device list must follow (our libusb build hears the kernel's netlink events; the prebuilt would not).
pgrep -x systemd-udevd > /dev/null && ktest_info "udevd runs in this guest: the no-udevd case is not what is tested"
remove_acm_gadget
wait_until 15 grep -q "device unplugged: .* at $ACM_LOCAL_BUSID" "$W/daemon.log" \
  && ktest_pass real.hotplug_unplug "without udevd, the daemon saw $ACM_LOCAL_BUSID go" || ktest_fail real.hotplug_unplug "no 'device unplugged' for $ACM_LOCAL_BUSID in 15 s"
make_acm_gadget || exit 1
tty_raw "$ACM_GADGET_TTY"
wait_until 15 sh -c "grep 'device unplugged: .* at $ACM_LOCAL_BUSID' -A1000 '$W/daemon.log' | grep -q 'device plugged in: .* at $ACM_LOCAL_BUSID'" \
  && ktest_pass real.hotplug_plug "without udevd, the daemon saw $ACM_LOCAL_BUSID come back" || ktest_fail real.hotplug_plug "no 'device plugged in' for $ACM_LOCAL_BUSID in 15 s"

sed 's/^/  daemon: /' "$W/daemon.log" | grep -v 'debug device' | tail -60
kill -TERM $DAEMON
if wait_until 10 _ktest_absent /proc/$DAEMON; then wait $DAEMON; rc=$?; else rc=timeout; kill -KILL $DAEMON; fi
[ "$rc" = 0 ] && ktest_pass real.daemon_stop "clean exit on SIGTERM" || ktest_fail real.daemon_stop "exit $rc"
tail -5 "$W/daemon.log" | sed 's/^/  daemon: /'
ktest_check gadget.remove remove_acm_gadget
exit 0
