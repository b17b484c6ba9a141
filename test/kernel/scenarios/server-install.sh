#!/bin/bash
# ktest-timeout: 240
# ktest-ftdi: none
#
# The one-step bench install, for real: the linux-x64 daemon bundle (out/package/…tar.gz from
# `npm run package:server`, else staged here with this node) runs `install` as root in the guest — a real
# useradd, /etc, /var/lib, udev rule and unit (the guest's / is a tmpfs overlay: nothing reaches the host).
# systemd is not PID 1 here, so the daemon is started exactly as the unit would start it: its User= and
# ExecStart= read from the installed unit, through setpriv, with NOTIFY_SOCKET pointing at a socat
# listener standing in for systemd (proves READY=1 arrives, and only once the bench serves). A client
# pairs with the ticket and code install printed and lists the bench (the configfs gadget among the
# devices); the daemon restarts with the same endpoint id and the client still gets in; doctor reports
# the state; uninstall keeps the identity, --purge removes everything and the user.
. "$KTEST_LIB"
W=/run/ktest/server-install
mkdir -p "$W/client" "$W/bundle"
NODE=${KTEST_NODE:-node}
CLIENT="$NODE $KTEST_REPO/dist/remote-usb.js"
load_modules || exit 1
make_acm_gadget || exit 1

TGZ=$(ls "$KTEST_REPO"/out/package/remote-usb-server-*-linux-x64.tar.gz 2>/dev/null | head -1)
if [ -n "$TGZ" ]; then
  tar -xzf "$TGZ" -C "$W/bundle" && B=$(echo "$W"/bundle/remote-usb-server-*) && ktest_info "bundle ${TGZ##*/}"
else
  B="$W/bundle/remote-usb-server"
  "$NODE" "$KTEST_REPO/server/packaging/package-server.mjs" --target linux-x64 --stage-only "$B" --node "$NODE" >/dev/null || { ktest_fail install.bundle "staging failed"; exit 1; }
  ktest_info "no out/package tarball: staged a bundle with this node"
fi

# 1. install
"$B/bin/remote-usb-server" install --minutes 30 > "$W/install.out" 2>&1; rc=$?
sed 's/^/  install| /' "$W/install.out"
TICKET=$(sed -n 's/^Bench ticket: //p' "$W/install.out")
CODE=$(sed -n 's/^Pairing code: \([0-9A-Z-]*\).*/\1/p' "$W/install.out")
[ $rc = 0 ] && [ -n "$TICKET" ] && [ -n "$CODE" ] && ktest_pass install.run "ticket + code printed" || { ktest_fail install.run "exit $rc"; exit 1; }
ok=1
# dialout for the ttys; not plugdev: the udev rule gives it the USB devices it shares, and no others
id -nG remote-usb | grep -qw dialout && ! id -nG remote-usb | grep -qw plugdev || { ok=0; ktest_info "user: $(id remote-usb 2>&1)"; }
grep -q '^ENV{DEVTYPE}=="usb_device", OWNER="remote-usb", MODE="0644", GOTO="remote_usb_end"$' /etc/udev/rules.d/70-remote-usb.rules \
  && ! grep -q plugdev /etc/udev/rules.d/70-remote-usb.rules || { ok=0; sed 's/^/  rule| /' /etc/udev/rules.d/70-remote-usb.rules; }
[ "$(stat -c '%a %U' /var/lib/remote-usb)" = "700 remote-usb" ] || { ok=0; ktest_info "state: $(stat -c '%a %U' /var/lib/remote-usb)"; }
[ "$(stat -c '%a %U' /var/lib/remote-usb/secret.key)" = "600 remote-usb" ] || { ok=0; ktest_info "key: $(stat -c '%a %U' /var/lib/remote-usb/secret.key)"; }
[ -L /usr/local/bin/remote-usb-server ] && [ -f /etc/udev/rules.d/70-remote-usb.rules ] && [ -f /etc/systemd/system/remote-usb-server.service ] || ok=0
grep -q "^created the bench identity" "$W/install.out" || { ok=0; ktest_info "install did not create a new identity (a stale /var/lib/remote-usb?)"; }
[ $ok = 1 ] && ktest_pass install.files "user in dialout (not plugdev), rule gives remote-usb the shared devices, state 0700, key 0600" || ktest_fail install.files "see above"
"$B/bin/remote-usb-server" install --no-pair > "$W/install2.out" 2>&1 && grep -q '^kept the bench identity' "$W/install2.out" \
  && ktest_pass install.idempotent "second install kept identity and config" || { sed 's/^/  | /' "$W/install2.out"; ktest_fail install.idempotent "second install"; }

# LAN only (the guest has no network), on loopback
sed -i 's/^\[relay\]$/[relay]\nmode = "disabled"/; s/^# listen = .*/listen = "127.0.0.1:47330"/' /etc/remote-usb/server.toml
# doctor on the bench as installed: udev does not run in the guest, so the device nodes are still root's
/usr/local/bin/remote-usb-server doctor > "$W/doctor0.out" 2>&1; rc=$?
sed 's/^/  doctor| /' "$W/doctor0.out"
[ $rc = 1 ] && grep -q '^PROBLEM *usb access *remote-usb cannot open' "$W/doctor0.out" && grep -q '^PROBLEM *tty access' "$W/doctor0.out" \
  && ktest_pass doctor.finds_access "exit 1: usb and tty access named" || ktest_fail doctor.finds_access "exit $rc"
# do what the installed rule does, for the devices present (what udevadm trigger would do): the example
# config shares every device, so each USB device (not the root hubs) goes to remote-usb, 0644
# (test/unit/server-install.test.ts runs the rule itself through a udev interpreter for other [sharing])
for d in /sys/bus/usb/devices/*; do
  [[ ${d##*/} =~ ^[0-9]+-[0-9.]+$ ]] || continue
  f=$(printf '/dev/bus/usb/%03d/%03d' "$(cat "$d/busnum")" "$(cat "$d/devnum")")
  [ -e "$f" ] && chown remote-usb "$f" && chmod 0644 "$f"
done
for f in /dev/ttyACM* /dev/ttyUSB*; do [ -e "$f" ] && chgrp dialout "$f" && chmod 0660 "$f"; done

# 2. the daemon exactly as the unit runs it
UNIT=/etc/systemd/system/remote-usb-server.service
USER_=$(sed -n 's/^User=//p' $UNIT); EXEC=$(sed -n 's/^ExecStart=//p' $UNIT)
ktest_info "unit: User=$USER_ ExecStart=$EXEC Type=$(sed -n 's/^Type=//p' $UNIT)"
start_daemon() {  # start_daemon N : as the unit would, READY=1 to a socat "systemd"
  rm -f "$W/notify.sock"
  socat -u UNIX-RECV:"$W/notify.sock" OPEN:"$W/notify$1.out",creat,append & NOTIFY_PID=$!
  wait_for_path "$W/notify.sock" 30 || { ktest_fail "daemon.ready$1" "the stand-in notify socket did not appear in 30 s"; return 1; }; chmod 666 "$W/notify.sock"
  # shellcheck disable=SC2086
  setpriv --reuid="$USER_" --regid="$USER_" --init-groups --reset-env \
    env NOTIFY_SOCKET="$W/notify.sock" PATH=/usr/bin:/bin $EXEC > "$W/daemon$1.log" 2>&1 & DAEMON=$!
  if wait_until 60 grep -q 'READY=1' "$W/notify$1.out"; then
    grep -q 'serving as' "$W/daemon$1.log" && ktest_pass "daemon.ready$1" "READY=1 after 'serving as' (uid $(stat -c %U /proc/$DAEMON))" \
      || ktest_fail "daemon.ready$1" "READY=1 before the daemon served"
  else
    sed 's/^/  daemon| /' "$W/daemon$1.log"; ktest_fail "daemon.ready$1" "no READY=1 in 60 s"; return 1
  fi
}
stop_daemon() { kill -TERM "$DAEMON"; wait "$DAEMON"; kill "$NOTIFY_PID" 2>/dev/null; wait "$NOTIFY_PID" 2>/dev/null; }

start_daemon 1 || exit 1
ID1=$(/usr/local/bin/remote-usb-server id)
[ "$(stat -c %U /proc/$DAEMON)" = remote-usb ] && ktest_pass daemon.user "runs as remote-usb" || ktest_fail daemon.user "runs as $(stat -c %U /proc/$DAEMON)"
BENCH="$ID1@127.0.0.1:47330"  # the ticket install printed names the port before we moved it to loopback
$CLIENT pair --bench "$BENCH" --code "$CODE" --key-dir "$W/client" > "$W/pair.out" 2>&1 \
  && ktest_pass client.pair "paired with install's code" || { cat "$W/pair.out"; ktest_fail client.pair "pair failed"; }
$CLIENT list --bench "$BENCH" --key-dir "$W/client" > "$W/list1.out" 2>&1
grep -q '1d6b:0104' "$W/list1.out" && ktest_pass client.list "bench lists the gadget (1d6b:0104) to the client" || { cat "$W/list1.out"; ktest_fail client.list "no gadget in the list"; }
/usr/local/bin/remote-usb-server doctor > "$W/doctor.out" 2>&1; rc=$?
sed 's/^/  doctor| /' "$W/doctor.out"
[ $rc = 0 ] && grep -q '^ok *usb access' "$W/doctor.out" && grep -q '^ok *tty access' "$W/doctor.out" && grep -q '^ok *usb others' "$W/doctor.out" \
  && grep -q '^ok *udev rule .*(matches \[sharing\])' "$W/doctor.out" \
  && ktest_pass doctor.healthy "exit 0, usb and tty access ok, no USB node writable by others" || ktest_fail doctor.healthy "exit $rc"

# 3. restart: same identity, the paired client still gets in
stop_daemon
start_daemon 2 || exit 1
ID2=$(/usr/local/bin/remote-usb-server id)
[ -n "$ID1" ] && [ "$ID1" = "$ID2" ] && ktest_pass daemon.same_identity "${ID1:0:16}… before and after restart" || ktest_fail daemon.same_identity "$ID1 != $ID2"
$CLIENT list --bench "$BENCH" --key-dir "$W/client" > "$W/list2.out" 2>&1 && grep -q '1d6b:0104' "$W/list2.out" \
  && ktest_pass client.after_restart "listed again" || { cat "$W/list2.out"; ktest_fail client.after_restart "list failed"; }
stop_daemon

# 4. uninstall keeps the identity; --purge removes everything
/usr/local/bin/remote-usb-server uninstall > "$W/un.out" 2>&1; rc=$?
sed 's/^/  uninstall| /' "$W/un.out"
[ $rc = 0 ] && [ ! -e /usr/local/bin/remote-usb-server ] && [ ! -e /usr/local/lib/remote-usb-server ] && [ ! -e $UNIT ] \
  && [ ! -e /etc/udev/rules.d/70-remote-usb.rules ] && [ -f /var/lib/remote-usb/secret.key ] && id remote-usb >/dev/null 2>&1 \
  && ktest_pass uninstall.keeps "program, unit, rule gone; identity and user kept" || ktest_fail uninstall.keeps "exit $rc"
"$B/bin/remote-usb-server" uninstall --purge > "$W/purge.out" 2>&1; rc=$?
[ $rc = 0 ] && [ ! -e /var/lib/remote-usb ] && [ ! -e /etc/remote-usb ] && ! id remote-usb >/dev/null 2>&1 \
  && ktest_pass uninstall.purge "state, config and user gone" || { sed 's/^/  purge| /' "$W/purge.out"; ktest_fail uninstall.purge "exit $rc"; }
exit 0
