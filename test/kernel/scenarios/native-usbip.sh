#!/bin/bash
# ktest-timeout: 300
# ktest-ftdi: echo
#
# BASELINE: Linux's own USB/IP (usbip-host + usbipd export, `usbip attach` -> vhci_hcd import) on loopback
# inside the guest, for the two real devices the harness provides:
#   - a configfs CDC-ACM gadget on dummy_hcd (device end /dev/ttyGS0), high speed
#   - qemu's emulated FTDI FT232 on qemu-xhci, full speed; its serial line is a socket on the host whose
#     peer (run-guest.mjs, mode "echo") sends every byte straight back
# Measures, in the same boot (host load makes numbers vary run to run, so compare within one run):
#   local_*   : the devices used directly (no usbip) — the ceiling
#   native_*  : through usbip: enumeration (attach command start -> the imported copy's tty exists in
#               /dev), tty throughput (random bytes, byte-identical; FTDI = echo, both directions at once)
# then detaches (vhci port must be free again) and unbinds (device back on its local driver).
. "$KTEST_LIB"

XFER_BYTES=${XFER_BYTES:-4194304}   # per direction, gadget
FTDI_BYTES=${FTDI_BYTES:-1048576}   # echoed through the FTDI

# ------------------------------------------------------------------------------------------ devices
ktest_log "native-usbip: kernel $(uname -r), node $(ktest_node --version 2>&1)"
ktest_check harness.node ktest_node -e 'process.exit(require("fs").existsSync(process.argv[1]) ? 0 : 1)' "$KTEST_REPO/package.json"
load_modules || exit 1

make_acm_gadget || exit 1
ktest_pass gadget.local "gadget $ACM_VID:$ACM_PID enumerated as $ACM_LOCAL_BUSID -> /dev/$ACM_LOCAL_TTY, device end $ACM_GADGET_TTY"
if r=$(wait_tty_of $FTDI_VID $FTDI_PID local 15); then
  FTDI_LOCAL_BUSID=${r% *} FTDI_LOCAL_TTY=${r#* }
  ktest_pass ftdi.local "qemu FTDI $FTDI_VID:$FTDI_PID as $FTDI_LOCAL_BUSID -> /dev/$FTDI_LOCAL_TTY"
else
  ktest_fail ftdi.local "qemu FTDI $FTDI_VID:$FTDI_PID not found (peer mode $KTEST_FTDI)"
fi

# ------------------------------------------------------------------------------------------ local baseline
ktest_log "local (no usbip) throughput"
# local baselines (Linux's own path, no USB/IP): one retry if the emulated CPU made the tty drop bytes
tty_xfer "/dev/$ACM_LOCAL_TTY" "$ACM_GADGET_TTY" "$XFER_BYTES" local_acm_out 60 1
tty_xfer "$ACM_GADGET_TTY" "/dev/$ACM_LOCAL_TTY" "$XFER_BYTES" local_acm_in 60 1
[ -n "${FTDI_LOCAL_TTY:-}" ] && tty_echo_xfer "/dev/$FTDI_LOCAL_TTY" "$FTDI_BYTES" local_ftdi_echo 120

# ------------------------------------------------------------------------------------------ export
ktest_log "usbipd + usbip bind"
start_usbipd || exit 1
usbip_bind "$ACM_LOCAL_BUSID" native_acm
[ -n "${FTDI_LOCAL_BUSID:-}" ] && usbip_bind "$FTDI_LOCAL_BUSID" native_ftdi
usbip list -r 127.0.0.1 2>&1 | sed 's/^/  /'

# ------------------------------------------------------------------------------------------ import + data
if time_attach native_acm $ACM_VID $ACM_PID usbip attach -r 127.0.0.1 -b "$ACM_LOCAL_BUSID"; then
  ACM_IMP_TTY=$IMP_TTY ACM_IMP_PORT=$IMP_PORT
  tty_xfer "/dev/$ACM_IMP_TTY" "$ACM_GADGET_TTY" "$XFER_BYTES" native_acm_out 120
  tty_xfer "$ACM_GADGET_TTY" "/dev/$ACM_IMP_TTY" "$XFER_BYTES" native_acm_in 120
fi
if [ -n "${FTDI_LOCAL_BUSID:-}" ] && time_attach native_ftdi $FTDI_VID $FTDI_PID usbip attach -r 127.0.0.1 -b "$FTDI_LOCAL_BUSID"; then
  FTDI_IMP_TTY=$IMP_TTY FTDI_IMP_PORT=$IMP_PORT
  if [ "$KTEST_FTDI" = echo ]; then tty_echo_xfer "/dev/$FTDI_IMP_TTY" "$FTDI_BYTES" native_ftdi_echo 120
  else ktest_info "FTDI peer mode $KTEST_FTDI: no echo throughput test"; fi
fi
ktest_log "vhci ports in use:"; vhci_ports_in_use | sed 's/^/  /'
usbip port 2>&1 | sed 's/^/  /'

# ------------------------------------------------------------------------------------------ detach + unbind
[ -n "${ACM_IMP_PORT:-}" ] && time_detach native_acm $ACM_VID $ACM_PID "$ACM_IMP_PORT" usbip detach -p "$ACM_IMP_PORT"
[ -n "${FTDI_IMP_PORT:-}" ] && time_detach native_ftdi $FTDI_VID $FTDI_PID "$FTDI_IMP_PORT" usbip detach -p "$FTDI_IMP_PORT"
if [ -z "$(vhci_ports_in_use)" ]; then ktest_pass native.vhci_all_free "no vhci port in use"
else ktest_fail native.vhci_all_free "ports still in use: $(vhci_ports_in_use | tr '\n' ';')"; fi
usbip_unbind "$ACM_LOCAL_BUSID" $ACM_VID $ACM_PID native_acm
[ -n "${FTDI_LOCAL_BUSID:-}" ] && usbip_unbind "$FTDI_LOCAL_BUSID" $FTDI_VID $FTDI_PID native_ftdi

# ------------------------------------------------------------------------------------------ cleanup
stop_usbipd
ktest_check gadget.remove remove_acm_gadget
exit 0
