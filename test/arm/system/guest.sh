#!/bin/bash
# Runs inside the arm64 guest (booted by test/arm/system/run.sh), started by systemd through rutest.service
# once the system is up; $1 is the 9p share with the host (the bundle in, results and logs out).
#
# 1. `remote-usb-server install` from the arm64 bundle: real useradd, /etc, /var/lib, udev rule, systemd unit,
#    `systemctl restart` that waits for the daemon's READY=1 (Type=notify).
# 2. Relay off (the guest has no route out), then `systemctl restart remote-usb-server` as the config's
#    comment says: the daemon serves again under systemd as the remote-usb user.
# 3. A configfs gadget on dummy_hcd (1d6b:0104, SourceSink + Loopback from usb_f_ss_lb): udev runs the
#    installed rule, so its device node goes to remote-usb.
# 4. Tells the host (share/ready: endpoint id, pairing code, bus id), waits for share/host.done while the host
#    client pairs, claims and moves data, then checks the daemon is still healthy and powers off.
# Lines "RUTEST PASS|FAIL|INFO ..." go to share/results.log (the host counts them).
S=${1:?share dir}
W=/root/rutest
mkdir -p "$W"
exec > >(tee -a "$S/guest.log") 2>&1
say() { echo "RUTEST $*" | tee -a "$S/results.log" >/dev/null; echo "RUTEST $*"; }
pass() { say "PASS $*"; }
fail() { say "FAIL $*"; }
info() { say "INFO $*"; }
finish() {
  journalctl -u remote-usb-server --no-pager > "$S/journal.log" 2>&1
  journalctl -b --no-pager > "$S/journal-all.log" 2>&1
  dmesg > "$S/dmesg.log" 2>&1
  echo "$1" > "$S/guest.done"
  sync
  systemctl poweroff --no-block
  exit 0
}
wait_for() {  # wait_for SECONDS cmd...
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.5; done
}

state=$(systemctl is-system-running --wait 2>&1)
info "guest up: $(uname -m) kernel $(uname -r), systemd $(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p') is PID 1 ($(cat /proc/1/comm)), system $state, boot to here $(cut -d' ' -f1 /proc/uptime) s"
[ "$(uname -m)" = aarch64 ] && [ "$(cat /proc/1/comm)" = systemd ] && pass guest.boot "aarch64, systemd PID 1" || fail guest.boot "arch $(uname -m), PID 1 $(cat /proc/1/comm)"

# The network: a static address on the tap link to the host (share/net.env), before install, so that the
# ticket install prints names it.
. "$S/net.env"
IF=$(basename "$(ls -d /sys/class/net/en* | head -1)")
ip link set "$IF" up && ip addr add "$ADDR" dev "$IF"
ip -br addr show "$IF" | grep -q "${ADDR%/*}" && pass guest.net "$IF ${ADDR} (host ${HOST})" || { fail guest.net "$(ip -br addr)"; finish 1; }

# The machine's USB host controller (dummy_hcd) is there before the daemon starts, as on a real board; the
# device itself is plugged in later. (A daemon started while the system had no USB bus at all did not see
# devices that appeared later, until restarted: noted in the README, Tests.)
modprobe dummy_hcd && modprobe libcomposite && modprobe usb_f_ss_lb || { fail gadget.modules "modprobe failed"; finish 1; }

# ---- 1. install
tar -xzf "$S/bundle.tar.gz" -C "$W" || { fail install.unpack "tar failed"; finish 1; }
B=$(echo "$W"/remote-usb-server-*)
info "bundle $(basename "$B"): its node $("$B/lib/node" --version) on $(uname -m)"
t0=$(date +%s)
"$B/bin/remote-usb-server" install --minutes 60 > "$S/install.out" 2>&1; rc=$?
sed 's/^/  install| /' "$S/install.out"
TICKET=$(sed -n 's/^Bench ticket: //p' "$S/install.out")
CODE=$(sed -n 's/^Pairing code: \([0-9A-Z-]*\).*/\1/p' "$S/install.out")
if [ $rc = 0 ] && [ -n "$TICKET" ] && [ -n "$CODE" ] && grep -q 'enabled and started (it reported ready)' "$S/install.out"; then
  pass install.run "exit 0 in $(( $(date +%s) - t0 )) s; systemd started the unit and it reported ready; ticket + code printed"
else
  fail install.run "exit $rc"; finish 1
fi

UNIT=/etc/systemd/system/remote-usb-server.service
service_check() {  # service_check NAME: active under systemd, as remote-usb, the bundle's node, the unit's ExecStart
  local pid user exe
  pid=$(systemctl show -p MainPID --value remote-usb-server)
  if [ "$(systemctl is-active remote-usb-server)" != active ] || [ -z "$pid" ] || [ "$pid" = 0 ]; then
    systemctl status remote-usb-server --no-pager | sed 's/^/  status| /'; fail "$1" "not active"; return 1
  fi
  user=$(stat -c %U "/proc/$pid"); exe=$(readlink "/proc/$pid/exe")
  if [ "$user" = remote-usb ] && [ "$exe" = /usr/local/lib/remote-usb-server/lib/node ] && grep -q "^ExecStart=/usr/local/bin/remote-usb-server run " $UNIT; then
    pass "$1" "systemd: active (Type=$(systemctl show -p Type --value remote-usb-server)), pid $pid as $user, $exe (cgroup $(cut -d: -f3 "/proc/$pid/cgroup"))"
  else
    fail "$1" "pid $pid user $user exe $exe"; return 1
  fi
}
service_check service.installed || finish 1
id -nG remote-usb | grep -qw dialout && [ "$(stat -c '%a %U' /var/lib/remote-usb)" = "700 remote-usb" ] \
  && [ -f /etc/udev/rules.d/70-remote-usb.rules ] && [ -L /usr/local/bin/remote-usb-server ] \
  && pass install.files "user remote-usb (dialout), state 0700, udev rule, /usr/local/bin link" || fail install.files "$(id remote-usb 2>&1)"

# ---- 2. relay off (no route out of the guest), restart as documented
sed -i 's/^\[relay\]$/[relay]\nmode = "disabled"/; s/^# log_level = .*/log_level = "debug"/' /etc/remote-usb/server.toml
t0=$(date +%s)
if systemctl restart remote-usb-server; then
  pass service.restart "systemctl restart returned after READY=1 in $(( $(date +%s) - t0 )) s"
else
  fail service.restart "systemctl restart failed"; finish 1
fi
service_check service.serving || finish 1
ID=$(/usr/local/bin/remote-usb-server id 2>/dev/null)
journalctl -u remote-usb-server --no-pager | grep -q "serving as $ID" && pass daemon.serving "serving as ${ID:0:16}…" || fail daemon.serving "no 'serving as $ID' in the journal"

# ---- 3. the gadget: SourceSink (bulk source/sink) + Loopback (bulk out, then back in) on dummy_hcd
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
G=/sys/kernel/config/usb_gadget/rutest
mkdir -p $G && cd $G || { fail gadget.make "configfs"; finish 1; }
echo 0x1d6b > idVendor; echo 0x0104 > idProduct; echo 0x0200 > bcdUSB; echo 0x0100 > bcdDevice
mkdir -p strings/0x409 configs/c.1/strings/0x409 functions/SourceSink.0 functions/Loopback.0
echo RUTEST0001 > strings/0x409/serialnumber; echo "Remote USB" > strings/0x409/manufacturer
echo "arm-system gadget zero" > strings/0x409/product; echo "source/sink + loopback" > configs/c.1/strings/0x409/configuration
echo 2 > functions/SourceSink.0/pattern     # no pattern: the sink takes any bytes
ln -s functions/SourceSink.0 configs/c.1/   # interface 0
ln -s functions/Loopback.0 configs/c.1/     # interface 1
echo dummy_udc.0 > UDC || { fail gadget.make "bind to dummy_udc.0"; finish 1; }
cd /
find_busid() { for d in /sys/bus/usb/devices/*; do [ "$(cat "$d/idVendor" 2>/dev/null):$(cat "$d/idProduct" 2>/dev/null)" = 1d6b:0104 ] && { echo "${d##*/}"; return 0; }; done; return 1; }
wait_for 30 find_busid >/dev/null || { fail gadget.enumerated "1d6b:0104 did not appear"; finish 1; }
BUSID=$(find_busid); D=/sys/bus/usb/devices/$BUSID
NODE=$(printf '/dev/bus/usb/%03d/%03d' "$(cat "$D/busnum")" "$(cat "$D/devnum")")
udevadm settle --timeout=30
pass gadget.enumerated "1d6b:0104 at $BUSID ($NODE), $(cat "$D/speed") Mb/s, $(cat "$D/bNumInterfaces" | tr -d ' ') interfaces"
# the installed udev rule gave the device to the service user (udev ran it on the add event)
wait_for 20 test "$(stat -c %U "$NODE")" = remote-usb
[ "$(stat -c '%U %a' "$NODE")" = "remote-usb 644" ] && pass udev.rule "$NODE is remote-usb's, 0644 (70-remote-usb.rules)" || fail udev.rule "$NODE: $(stat -c '%U %a' "$NODE")"

# ---- 4. the host's turn
printf 'ID=%s\nCODE=%s\nBUSID=%s\nTICKET=%s\n' "$ID" "$CODE" "$BUSID" "$TICKET" > "$S/ready.tmp" && mv "$S/ready.tmp" "$S/ready"
info "ready for the host client (pairing code, bus id $BUSID)"
# (a debugging hook while waiting: the host may drop a script as share/cmd.sh; its output goes to share/cmd.out)
host_turn() {
  if [ -f "$S/cmd.sh" ]; then mv "$S/cmd.sh" "$W/cmd.sh"; bash "$W/cmd.sh" > "$S/cmd.out.tmp" 2>&1; mv "$S/cmd.out.tmp" "$S/cmd.out"; fi
  test -f "$S/host.done"
}
wait_for 3000 host_turn || fail host.wait "no host.done from the host"
# the daemon survived the session, still under systemd, and never restarted
service_check service.after || true
restarts=$(systemctl show -p NRestarts --value remote-usb-server)
[ "$restarts" = 0 ] && pass service.no_restart "NRestarts=0" || fail service.no_restart "NRestarts=$restarts"
# the sink/loopback functions report no error (bad OUT bytes would halt the endpoint and log to dmesg)
dmesg | grep -Ei 'bad OUT byte|dummy_hcd.*error|Oops|BUG:' | sed 's/^/  dmesg| /'
finish 0
