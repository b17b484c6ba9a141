#!/bin/bash
# ktest-timeout: 900
# ktest-ftdi: none
# ktest-mem: 3072
# ktest-smp: 2
#
# Guest half of `npm run test:vscode:kernel` (host half: test/vscode/run-kernel.mjs, which boots this with
# run-guest.mjs --forward HOSTPORT:8080 --share DIR; it is not in test/kernel/scenarios/ because it needs
# that host half and a browser). In ONE kernel: the bench (a configfs CDC-ACM gadget on dummy_hcd, whose
# firmware end /dev/ttyGS0 echoes, and our daemon on the real `usb` backend) and the developer machine
# (vhci_hcd, our helper installed with a polkit rule for group plugdev plus, since alice has no seat
# session here, the administrator's rule for her (attach_user), the real pkexec, and code-server
# running as the unprivileged user alice, whose extension host runs the suite test/vscode/suite-kernel/).
# The browser runs on the host. Files go both ways through the shared directory $KTEST_SHARE:
#   host.json   host -> guest: code-server password, arguments, settings, the host's cache dir
#   bench.json  guest -> host: the bench ticket and a one-time pairing code, the gadget's ids
#   done        host -> guest: the host finished (the suite ran, or it gave up)
#   guest-logs/ guest -> host: code-server, extension host, daemon and helper logs (diagnostics)
# After `done`: no vhci port may be left in use and cdc_acm must be bound again on the bench side.
. "$KTEST_LIB"
NODE=${KTEST_NODE:-node}
S=${KTEST_SHARE:?needs run-guest.mjs --share}
W=/run/ktest/vscode
GUEST_PORT=8080
T0=$(ktest_now_ms)
mkdir -p "$W/state"
elapsed_s() { echo $(( ($(ktest_now_ms) - T0) / 1000 )); }

# ---------------------------------------------------------------- host link: shared dir + forwarded NIC
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=512000 "${KTEST_SHARE_TAG:-ktestshare}" "$S" \
  || { ktest_fail vscode.share "cannot mount the shared directory at $S"; exit 1; }
[ -f "$S/host.json" ] || { ktest_fail vscode.share "no host.json in $S"; exit 1; }
hostcfg() { "$NODE" -e 'const c = require(process.argv[1]); const v = process.argv[2].split(".").reduce((o, k) => o[k], c); console.log(Array.isArray(v) ? v.join("\n") : typeof v === "object" ? JSON.stringify(v, null, 2) : v)' "$S/host.json" "$1"; }
modprobe virtio_net && ip link set lo up && ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up \
  || { ktest_fail vscode.net "cannot bring up eth0: $(ip -br link | tr '\n' ' ')"; exit 1; }
ktest_pass vscode.net "eth0 10.0.2.15, forwards ${KTEST_NET_FORWARDS:-none}"

# ---------------------------------------------------------------- bench side: gadget, firmware echo, daemon
load_modules xhci_pci usbip_core usbip_host vhci_hcd dummy_hcd libcomposite usb_f_acm cdc_acm || exit 1
make_acm_gadget || exit 1
ktest_pass vscode.gadget "CDC-ACM gadget $ACM_VID:$ACM_PID on $ACM_LOCAL_BUSID, bench tty /dev/$ACM_LOCAL_TTY, firmware end $ACM_GADGET_TTY"
# The "firmware": echoes every byte it receives on the gadget's tty and keeps a copy in fw.log (the suite
# reads it). Reopens when the host side goes away and comes back (claim, attach, detach).
FW_LOG=/run/ktest/fw.log; : > "$FW_LOG"; chmod 644 "$FW_LOG"
firmware_echo() {
  while :; do
    tty_raw "$ACM_GADGET_TTY" 2>/dev/null
    if exec 3<>"$ACM_GADGET_TTY"; then cat <&3 | tee -a "$FW_LOG" >&3; exec 3>&-; fi
    ktest_sleep 0.2
  done
}
firmware_echo & FW=$!

PORT=47320
bench_config "$W/server.toml" "$PORT" "$W/state"
start_bench vscode "$W/server.toml" "$W/daemon.log" 30
# 30 min: the host may take long to get its browser and the workbench up on a busy machine (a 10-minute code expired once)
PAIR=$("$NODE" "$KTEST_REPO/dist/server.js" pair --minutes 30 -c "$W/server.toml") || { ktest_fail vscode.pair "remote-usb-server pair failed: $PAIR"; exit 1; }
CODE=$(sed -n 's/^Pairing code: \([A-Z0-9-]*\).*/\1/p' <<< "$PAIR")
TICKET=$(sed -n 's/^Bench ticket: \(.*\)$/\1/p' <<< "$PAIR")
[ -n "$CODE" ] && [ -n "$TICKET" ] || { ktest_fail vscode.pair "cannot read the code and ticket from: $PAIR"; exit 1; }
printf '{"ticket":"%s","code":"%s","vidPid":"%s:%s","busid":"%s","benchTty":"/dev/%s","firmwareLog":"%s"}\n' \
  "$TICKET" "$CODE" "$ACM_VID" "$ACM_PID" "$ACM_LOCAL_BUSID" "$ACM_LOCAL_TTY" "$FW_LOG" > "$S/bench.json.tmp" && mv "$S/bench.json.tmp" "$S/bench.json"
ktest_pass vscode.pair "daemon on the real usb backend serving; one-time pairing code and ticket handed to the host"

# ---------------------------------------------------------------- developer side: helper + polkit, alice
attach_user vscode dialout
[ "$(id -u alice)" != 0 ] && ktest_pass vscode.unprivileged "code-server runs as alice (uid $(id -u alice), groups $(id -Gn alice))"
# udev's default rule for serial ports (KERNEL=="ttyACM[0-9]*", GROUP="dialout", MODE="0660"): there is
# no udev in the guest, so this loop applies it to new /dev/ttyACM* nodes (builtins only: no fork per poll).
udev_tty_rule() {
  while :; do
    for t in /dev/ttyACM*; do [ -c "$t" ] && [ -G "$t" ] && chgrp dialout "$t" && chmod 0660 "$t"; done
    ktest_sleep 0.1
  done
}
udev_tty_rule & UDEV=$!

# ---------------------------------------------------------------- code-server as alice, on the host's cache
CACHE=$(hostcfg cacheDir); NODE24=$(hostcfg node24); CS=$(hostcfg codeServer)
# the host's cache is under root's home (0700 on the host): let alice through, in this guest only (overlay)
d=$CACHE; while [ "$d" != / ]; do [ -x "$d" ] && { chmod o+x "$d" 2>/dev/null || true; }; d=$(dirname "$d"); done
run_as alice test -x "$NODE24" -a -r "$CS" || { ktest_fail vscode.cache "alice cannot run $NODE24 $CS"; exit 1; }
# code-server's parent process gives its child 10 s to say hello (wrapper.js), and loading code-server
# under TCG takes ~40 s: raise that one constant in this guest's copy (the overlay; the host is untouched).
WRAP=$(dirname "$CS")/wrapper.js
sed -i 's/^const timeoutInterval = 10000;/const timeoutInterval = 600000;/' "$WRAP" && grep -q '^const timeoutInterval = 600000;' "$WRAP" \
  || { ktest_fail vscode.wrapper "cannot raise code-server's handshake timeout in $WRAP"; exit 1; }
# Same for the workbench (served to the host's browser from here): it gives the remote extension host 60 s
# to report ready, and drops the extension host's socket after 20 s without a byte from it (which ends an
# extension test run); under TCG the extension host is busy for longer than that while it loads. Raise
# both to 10 minutes in this guest's copy.
WB=$(dirname "$(dirname "$CS")")/../lib/vscode/out/vs/code/browser/workbench/workbench.js
sed -i -e 's/took longer than 60s to send its ready message.")},6e4)/took longer than 60s to send its ready message.")},6e5)/' \
  -e 's/if(e>=2e4&&t>=2e4&&i>=2e4&&!this._loadEstimator.hasHighLoad())/if(e>=6e5\&\&t>=6e5\&\&i>=6e5\&\&!this._loadEstimator.hasHighLoad())/' \
  -e 's/if(e>=2e4&&t>=2e4&&!this._loadEstimator.hasHighLoad())/if(e>=6e5\&\&t>=6e5\&\&!this._loadEstimator.hasHighLoad())/' "$WB" &&
  grep -q 'send its ready message.")},6e5)' "$WB" && grep -q 'if(e>=6e5&&t>=6e5&&i>=6e5&&!this._loadEstimator' "$WB" && grep -q 'if(e>=6e5&&t>=6e5&&!this._loadEstimator' "$WB" \
  || { ktest_fail vscode.workbench "cannot raise the workbench's extension host timeouts in $WB"; exit 1; }
mkdir -p "$W/cs/data/User" "$W/cs/ext" "$W/cs/ws"
hostcfg settings > "$W/cs/data/User/settings.json"
echo 'cert: false' > "$W/cs/code-server.yaml"
chown -R alice: "$W/cs"; chmod 700 "$W/cs"
mapfile -t CS_ARGS <<< "$(hostcfg args)"   # (no /dev/fd in the guest: no process substitution)
PASSWORD=$(hostcfg password)
T_CS=$(ktest_now_ms)
( cd "$W/cs/ws" && exec setpriv --reuid=alice --regid=alice --init-groups --reset-env \
    env HOME=/home/alice USER=alice LANG=C.UTF-8 PASSWORD="$PASSWORD" PATH="$(dirname "$NODE24"):/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    setsid "$NODE24" "$CS" "${CS_ARGS[@]}" ) > "$W/code-server.log" 2>&1 & CSPID=$!
unset PASSWORD
if wait_until 300 grep -q "HTTP server listening on http://0.0.0.0:$GUEST_PORT" "$W/code-server.log"; then
  ktest_metric vscode.code_server_listen_ms $(( $(ktest_now_ms) - T_CS )) ms
  ktest_pass vscode.code_server "code-server $(hostcfg codeServerVersion) on Node $("$NODE24" --version) listening on :$GUEST_PORT as alice"
else
  tail -20 "$W/code-server.log"; ktest_fail vscode.code_server "code-server not listening on 0.0.0.0:$GUEST_PORT after 300 s"
fi

# ---------------------------------------------------------------- the host runs the suite; wait for it
ktest_info "waiting for the host's suite (it writes $S/done)"
left=$(( ${KTEST_GUEST_TIMEOUT:-870} - $(elapsed_s) - 40 ))
if wait_until "$left" test -e "$S/done"; then
  ktest_pass vscode.host_done "host says: $(head -c 200 "$S/done")"
else
  ktest_fail vscode.host_done "no word from the host within ${left}s"
fi
ktest_metric vscode.guest_session_s "$(elapsed_s)" s

# ---------------------------------------------------------------- after the suite: nothing left behind
# closing VS Code detaches what is still attached (deactivate); give it the chance a user's window has
kill -TERM -- -"$(pgrep -o -f "$CS" || echo 0)" 2>/dev/null || kill -TERM "$CSPID" 2>/dev/null
wait_until 20 sh -c "! pgrep -f '$CS' >/dev/null" || pkill -KILL -f "$CS"
if [ -z "$(vhci_ports_in_use)" ]; then ktest_pass vscode.vhci_all_free "no vhci port in use after the suite"
else ktest_fail vscode.vhci_all_free "ports still in use: $(vhci_ports_in_use | tr '\n' ';')"; fi
if wait_until 30 sh -c "[ \"\$(basename \"\$(readlink /sys/bus/usb/devices/$ACM_LOCAL_BUSID:1.0/driver)\")\" = cdc_acm ]"; then
  ktest_pass vscode.driver_back "cdc_acm bound again on the bench side ($ACM_LOCAL_BUSID -> /dev/$(tty_of_busid "$ACM_LOCAL_BUSID"))"
else
  ktest_fail vscode.driver_back "bench-side driver: $(driver_of "$ACM_LOCAL_BUSID:1.0")"
fi
if dmesg | grep -qE 'BUG:|Oops|WARNING: CPU|general protection'; then ktest_fail vscode.kernel_healthy "$(dmesg | grep -m3 -E 'BUG:|Oops|WARNING: CPU|general protection')"
else ktest_pass vscode.kernel_healthy "no oops/BUG/WARNING in dmesg"; fi
grep -E 'claimed|released|pair|allow|gone|warn|error' "$W/daemon.log" | sed 's/^/  daemon: /' | tail -20

kill -TERM "$DAEMON"; wait_until 10 _ktest_absent "/proc/$DAEMON" || kill -KILL "$DAEMON"
kill "$FW" "$UDEV" 2>/dev/null
# logs for the host (run-kernel.mjs prints them when something failed)
mkdir -p "$S/guest-logs"
cp "$W/code-server.log" "$W/daemon.log" "$S/guest-logs/" 2>/dev/null
cp -r "$W/cs/data/logs" "$S/guest-logs/vscode-logs" 2>/dev/null
cp "$FW_LOG" "$S/guest-logs/firmware.log" 2>/dev/null
exit 0
