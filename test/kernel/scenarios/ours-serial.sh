#!/bin/bash
# ktest-timeout: 240
# ktest-ftdi: none
#
# Serial streaming on the bench, against a real kernel tty: our daemon (real `usb` backend + `serialport`)
# finds the configfs CDC-ACM gadget's host-side tty from sysfs, opens it for `remote-usb serial` over real
# Iroh on loopback, and the bytes match what the gadget's far end (/dev/ttyGS0, the "firmware") reads and
# writes. Then the gadget is unplugged and plugged back: the session says 'waiting', then 'open' again on
# the same bus id, and data flows again.
. "$KTEST_LIB"
W=/run/ktest/ours-serial
mkdir -p "$W/state" "$W/client"
load_modules || exit 1
make_acm_gadget || exit 1
tty_raw "$ACM_GADGET_TTY"

PORT=47320
bench_config "$W/server.toml" "$PORT" "$W/state"
NODE=${KTEST_NODE:-node}
SERVER="$NODE $KTEST_REPO/dist/server.js"
CLIENT="$NODE $KTEST_REPO/dist/remote-usb.js"

$SERVER list --json -c "$W/server.toml" > "$W/list.json"
if grep -q "\"tty\": \"/dev/$ACM_LOCAL_TTY\"" "$W/list.json"; then
  ktest_pass serial.tty_from_sysfs "$ACM_LOCAL_BUSID → /dev/$ACM_LOCAL_TTY"
else
  sed 's/^/  /' "$W/list.json"; ktest_fail serial.tty_from_sysfs "list --json has no tty /dev/$ACM_LOCAL_TTY for $ACM_LOCAL_BUSID"
fi

start_bench serial "$W/server.toml" "$W/daemon.log"
BENCH="$($SERVER id -c "$W/server.toml")@127.0.0.1:$PORT"
$SERVER allow "$($CLIENT id --key-dir "$W/client")" --name ktest -c "$W/server.toml" >/dev/null

BYTES=32768
head -c $BYTES /dev/urandom > "$W/up.bin"
head -c $BYTES /dev/urandom > "$W/down.bin"
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
both_arrived() { [ "$(size "$W/gadget.got")" -ge $BYTES ] && [ "$(size "$W/client.got")" -ge $BYTES ]; }

# The firmware end reads what the client sends.
cat "$ACM_GADGET_TTY" > "$W/gadget.got" & CAT=$!
# The client's stdin is a fifo kept open by fd 7, so it runs until we close it.
mkfifo "$W/in"
$CLIENT serial --bench "$BENCH" --relay disabled --key-dir "$W/client" "$ACM_LOCAL_BUSID" < "$W/in" > "$W/client.got" 2> "$W/client.err" & CLI=$!
exec 7> "$W/in"
if wait_until 60 grep -q 'connected to' "$W/client.err"; then
  ktest_pass serial.open "$(head -1 "$W/client.err" | tr -d '\r')"
else
  cat "$W/client.err"; ktest_fail serial.open "remote-usb serial did not connect"
  exec 7>&-; kill $CAT $DAEMON 2>/dev/null; remove_acm_gadget; exit 1
fi
t0=$(ktest_now_us)
cat "$W/up.bin" >&7
timeout 60 cat "$W/down.bin" > "$ACM_GADGET_TTY" || ktest_info "writing to $ACM_GADGET_TTY did not finish"
wait_until 90 both_arrived || ktest_info "after 90 s: firmware got $(size "$W/gadget.got"), client got $(size "$W/client.got") of $BYTES bytes"
ktest_metric serial_both_ways_MBps "$(_ktest_mbps $((2 * BYTES)) $(( $(ktest_now_us) - t0 )))" MB/s
ktest_check serial.client_to_firmware cmp -n $BYTES "$W/up.bin" "$W/gadget.got"
ktest_check serial.firmware_to_client cmp -n $BYTES "$W/down.bin" "$W/client.got"
kill $CAT 2>/dev/null; wait $CAT 2>/dev/null

# Unplug the board and plug it back: same bus id on dummy_hcd; the bench reopens its tty by itself.
remove_acm_gadget || ktest_fail serial.unplug "could not remove the gadget"
if wait_until 20 grep -q '^\[waiting' "$W/client.err"; then
  ktest_pass serial.waiting "$(grep -m1 '^\[waiting' "$W/client.err" | tr -d '\r')"
else
  cat "$W/client.err"; ktest_fail serial.waiting "no 'waiting' state after the unplug"
fi
OLD_BUSID=$ACM_LOCAL_BUSID
make_acm_gadget || exit 1
tty_raw "$ACM_GADGET_TTY"
[ "$ACM_LOCAL_BUSID" = "$OLD_BUSID" ] || ktest_info "bus id changed: $OLD_BUSID → $ACM_LOCAL_BUSID"
if wait_until 30 grep -q '^\[open' "$W/client.err"; then
  ktest_pass serial.reopened "$(grep -m1 '^\[open' "$W/client.err" | tr -d '\r')"
else
  cat "$W/client.err"; ktest_fail serial.reopened "no 'open' state after the re-plug"
fi
: > "$W/client.got"
timeout 10 sh -c 'printf "hello again from the firmware\n" > "$1"' _ "$ACM_GADGET_TTY"
wait_until 20 grep -q 'hello again from the firmware' "$W/client.got" \
  && ktest_pass serial.data_after_replug \
  || ktest_fail serial.data_after_replug "no data after the re-plug (got: $(head -c 200 "$W/client.got" | od -c | head -3))"

exec 7>&-   # end of input: the client closes the session and exits
if wait_until 15 _ktest_absent /proc/$CLI; then wait $CLI; rc=$?; else rc=timeout; kill -KILL $CLI; fi
[ "$rc" = 0 ] && ktest_pass serial.client_exit "exit 0 at end of input" || ktest_fail serial.client_exit "exit $rc"

sed 's/^/  daemon: /' "$W/daemon.log" | grep -i 'serial\|tty\|device' | tail -30
kill -TERM $DAEMON
if wait_until 10 _ktest_absent /proc/$DAEMON; then wait $DAEMON; rc=$?; else rc=timeout; kill -KILL $DAEMON; fi
[ "$rc" = 0 ] && ktest_pass serial.daemon_stop "clean exit on SIGTERM" || ktest_fail serial.daemon_stop "exit $rc"
ktest_check gadget.remove remove_acm_gadget
exit 0
