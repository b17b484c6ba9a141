#!/bin/bash
# ktest-timeout: 800
# ktest-ftdi: echo
#
# The whole attach path, for real: our daemon (real `usb` backend, not usbip-host) exports the configfs
# CDC-ACM gadget and qemu's FTDI; an UNPRIVILEGED user runs our client (`remote-usb attach`), which makes a
# unix socket pair and attaches it to vhci_hcd through our helper run by the real pkexec, allowed by a polkit
# rule for its group; the kernel enumerates the devices under vhci_hcd, cdc_acm / ftdi_sio bind, and bytes
# flow (≥ 1 MiB each way, byte-identical). Then: detach (port free, the bench's kernel driver back),
# kill the client mid-transfer, unplug the board mid-transfer — the kernel stays healthy, no port leaks.
# Last, Linux's own usbip on the same gadget in the same boot, for the ours/native ratios.
. "$KTEST_LIB"
W=/run/ktest/ours-attach
NODE=${KTEST_NODE:-node}
XFER=${XFER_BYTES:-1048576}
mkdir -p "$W/state"
load_modules || exit 1
make_acm_gadget || exit 1
tty_raw "$ACM_GADGET_TTY"
if r=$(wait_tty_of $FTDI_VID $FTDI_PID local 15); then FTDI_LOCAL_BUSID=${r% *}; else ktest_fail ftdi.local "qemu FTDI not found"; fi

# ---------------------------------------------------------------- bench side: our daemon, real USB backend
PORT=47320
bench_config "$W/server.toml" "$PORT" "$W/state"
start_bench ours "$W/server.toml" "$W/daemon.log"
BENCH="$("$NODE" "$KTEST_REPO/dist/server.js" id -c "$W/server.toml")@127.0.0.1:$PORT"

# ---------------------------------------------------------------- developer side: helper, polkit, a user
attach_user ours
ls -l /usr/local/libexec/remote-usb/ | sed 's/^/  /'
alice_key "$W/server.toml"
# setpriv execs node, so $ATTACH_PID is the client itself and signals reach it (run_as is a shell function)
CLIENT=(setpriv --reuid=alice --regid=alice --init-groups --reset-env "$NODE" "$KTEST_REPO/dist/remote-usb.js" attach --bench "$BENCH" --relay disabled --key-dir "$AK" --log-level debug)
[ "$(id -u alice)" != 0 ] && ktest_pass user.unprivileged "client runs as alice (uid $(id -u alice), groups $(id -Gn alice))"

stop_client() { kill -TERM "$1" 2>/dev/null; wait_until 30 _ktest_absent "/proc/$1"; }
driver_back() { wait_until "${2:-15}" sh -c "[ \"\$(basename \"\$(readlink /sys/bus/usb/devices/$1:1.0/driver)\")\" = \"$3\" ]"; }

# ---------------------------------------------------------------- CDC-ACM gadget: attach, 1 MiB each way, detach
if time_attach ours_acm $ACM_VID $ACM_PID --bg "${CLIENT[@]}" "$ACM_LOCAL_BUSID"; then
  ACM_PID_CLIENT=$ATTACH_PID ACM_PORT=$IMP_PORT OURS_ENUM=$ENUM_MS
  attach_breakdown ours_acm "/run/ktest/ours_acm.attach.log" && OURS_KERNEL=${ATTACH_KERNEL_MS:-}
  tty_xfer "/dev/$IMP_TTY" "$ACM_GADGET_TTY" "$XFER" ours_acm_out 180 && OURS_OUT=$XFER_MBPS
  tty_xfer "$ACM_GADGET_TTY" "/dev/$IMP_TTY" "$XFER" ours_acm_in 180 && OURS_IN=$XFER_MBPS
  # Unlink races under load: every close of the tty makes cdc_acm kill its 16 queued reads (CMD_UNLINK
  # while the bench may be completing them) and every open submits 16 more, while the board streams.
  (timeout 90 sh -c 'while :; do head -c 65536 /dev/urandom; done' > "$ACM_GADGET_TTY") 2>/dev/null & STREAM=$!
  for i in $(seq 1 25); do timeout 0.4 cat "/dev/$IMP_TTY" > /dev/null 2>&1; done
  kill "$STREAM" 2>/dev/null; wait "$STREAM" 2>/dev/null
  for i in $(seq 1 10); do [ "$(timeout 2 cat "/dev/$IMP_TTY" 2>/dev/null | wc -c)" = 0 ] && break; done   # drain what the board still had
  [ "$(vhci_port_state "$ACM_PORT")" = 006 ] && ktest_pass ours_acm.unlink_races "25 close/open cycles of /dev/$IMP_TTY while the board streamed: port still attached" \
    || ktest_fail ours_acm.unlink_races "vhci port $ACM_PORT state $(vhci_port_state "$ACM_PORT") after the close/open cycles"
  tty_xfer "$ACM_GADGET_TTY" "/dev/$IMP_TTY" 65536 ours_acm_after_unlinks 60
  time_detach ours_acm $ACM_VID $ACM_PID "$ACM_PORT" stop_client "$ACM_PID_CLIENT"
  driver_back "$ACM_LOCAL_BUSID" 15 cdc_acm && ktest_pass ours_acm.driver_back "cdc_acm bound again on the bench side ($ACM_LOCAL_BUSID)" \
    || ktest_fail ours_acm.driver_back "bench-side driver: $(driver_of "$ACM_LOCAL_BUSID:1.0")"
fi
grep -v 'repeated' /run/ktest/ours_acm.attach.log | sed 's/^/  client: /' | tail -25

# ---------------------------------------------------------------- FTDI (full speed, ftdi_sio): attach, echo, detach
if [ -n "${FTDI_LOCAL_BUSID:-}" ] && time_attach ours_ftdi $FTDI_VID $FTDI_PID --bg "${CLIENT[@]}" "$FTDI_LOCAL_BUSID"; then
  FTDI_CLIENT=$ATTACH_PID FTDI_PORT=$IMP_PORT
  tty_echo_xfer "/dev/$IMP_TTY" "${FTDI_BYTES:-1048576}" ours_ftdi_echo 300
  time_detach ours_ftdi $FTDI_VID $FTDI_PID "$FTDI_PORT" stop_client "$FTDI_CLIENT"
  driver_back "$FTDI_LOCAL_BUSID" 15 ftdi_sio && ktest_pass ours_ftdi.driver_back "ftdi_sio bound again on the bench side" \
    || ktest_fail ours_ftdi.driver_back "bench-side driver: $(driver_of "$FTDI_LOCAL_BUSID:1.0")"
fi

# ---------------------------------------------------------------- client killed mid-transfer
if time_attach ours_kill $ACM_VID $ACM_PID --bg "${CLIENT[@]}" "$ACM_LOCAL_BUSID"; then
  KPORT=$IMP_PORT
  (timeout 60 head -c 4194304 /dev/urandom > "/dev/$IMP_TTY") 2>/dev/null & WRITER=$!
  ktest_sleep 1
  kill -KILL "$ATTACH_PID"
  wait_until 20 vhci_port_free "$KPORT" && ktest_pass ours_kill.port_freed "client SIGKILLed mid-transfer: the kernel freed vhci port $KPORT" \
    || ktest_fail ours_kill.port_freed "vhci port $KPORT state $(vhci_port_state "$KPORT")"
  kill "$WRITER" 2>/dev/null; wait "$WRITER" 2>/dev/null
  # the bench hears nothing for 20 s, then keeps the session 40 s for a resume that never comes
  driver_back "$ACM_LOCAL_BUSID" 90 cdc_acm && ktest_pass ours_kill.driver_back "the daemon noticed the lost client and gave cdc_acm back after its resume grace" \
    || ktest_fail ours_kill.driver_back "bench-side driver: $(driver_of "$ACM_LOCAL_BUSID:1.0")"
fi

# ---------------------------------------------------------------- board unplugged mid-transfer
if time_attach ours_unplug $ACM_VID $ACM_PID --bg "${CLIENT[@]}" "$ACM_LOCAL_BUSID"; then
  UPORT=$IMP_PORT UCLIENT=$ATTACH_PID
  (timeout 60 head -c 4194304 /dev/urandom > "/dev/$IMP_TTY") 2>/dev/null & WRITER=$!
  ktest_sleep 1
  remove_acm_gadget
  wait_until 30 vhci_port_free "$UPORT" && ktest_pass ours_unplug.port_freed "board unplugged mid-transfer: vhci port $UPORT freed" \
    || ktest_fail ours_unplug.port_freed "vhci port $UPORT state $(vhci_port_state "$UPORT")"
  wait_until 20 _ktest_absent "/proc/$UCLIENT" && ktest_pass ours_unplug.client_exit "the client noticed and exited" \
    || { ktest_fail ours_unplug.client_exit "client still running"; kill -KILL "$UCLIENT"; }
  kill "$WRITER" 2>/dev/null; wait "$WRITER" 2>/dev/null
  grep -v 'repeated' /run/ktest/ours_unplug.attach.log | sed 's/^/  client: /' | tail -12
fi
if [ -z "$(vhci_ports_in_use)" ]; then ktest_pass ours.vhci_all_free "no vhci port in use"; else ktest_fail ours.vhci_all_free "$(vhci_ports_in_use | tr '\n' ';')"; fi
if dmesg | grep -qE 'BUG:|Oops|WARNING: CPU|general protection'; then ktest_fail ours.kernel_healthy "$(dmesg | grep -m3 -E 'BUG:|Oops|WARNING: CPU|general protection')"; else ktest_pass ours.kernel_healthy "no oops/BUG/WARNING in dmesg"; fi

kill -TERM "$DAEMON"; wait_until 10 _ktest_absent "/proc/$DAEMON" && ktest_pass ours.daemon_stop "clean stop" || { ktest_fail ours.daemon_stop "daemon still running"; kill -KILL "$DAEMON"; }
grep -E 'claimed|released|gone|warn|error' "$W/daemon.log" | sed 's/^/  daemon: /' | tail -20

# ---------------------------------------------------------------- native usbip baseline, same boot
remove_acm_gadget
make_acm_gadget native || exit 1
tty_raw "$ACM_GADGET_TTY"
start_usbipd || exit 1
usbip_bind "$ACM_LOCAL_BUSID" native_acm
if time_attach native_acm $ACM_VID $ACM_PID usbip attach -r 127.0.0.1 -b "$ACM_LOCAL_BUSID"; then
  NATIVE_ENUM=$ENUM_MS
  NATIVE_KERNEL=$(( ENUM_MS - ${ATTACH_CMD_MS:-0} ))   # usbip attach done -> tty
  ktest_metric native_acm_kernel_ms "$NATIVE_KERNEL" ms
  tty_xfer "/dev/$IMP_TTY" "$ACM_GADGET_TTY" "$XFER" native_acm_out 120 && NATIVE_OUT=$XFER_MBPS
  tty_xfer "$ACM_GADGET_TTY" "/dev/$IMP_TTY" "$XFER" native_acm_in 120 && NATIVE_IN=$XFER_MBPS
  time_detach native_acm $ACM_VID $ACM_PID "$IMP_PORT" usbip detach -p "$IMP_PORT"
fi
usbip_unbind "$ACM_LOCAL_BUSID" $ACM_VID $ACM_PID native_acm
stop_usbipd
ktest_check gadget.remove remove_acm_gadget native

# ---------------------------------------------------------------- ours / native (same boot, same gadget)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.3f", a / b }'; }
# enumeration: native time / ours time (≥ 1 means ours is as fast); throughput: ours / native
ktest_metric ratio_enum_native_over_ours "$(ratio "${NATIVE_ENUM:-}" "${OURS_ENUM:-}")" x
# the kernel's part alone: from the device on the vhci port to its tty (without process start-ups)
ktest_metric ratio_enum_kernel_native_over_ours "$(ratio "${NATIVE_KERNEL:-}" "${OURS_KERNEL:-}")" x
ktest_metric ratio_acm_out_ours_over_native "$(ratio "${OURS_OUT:-}" "${NATIVE_OUT:-}")" x
ktest_metric ratio_acm_in_ours_over_native "$(ratio "${OURS_IN:-}" "${NATIVE_IN:-}")" x
exit 0
