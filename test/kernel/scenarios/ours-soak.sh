#!/bin/bash
# ktest-timeout: 800
# ktest-ftdi: none
#
# Soak and network drops on the real attach path. KTEST_SOAK_CYCLES (default 10) cycles of: the
# unprivileged user attaches the CDC-ACM gadget with `remote-usb attach` (real pkexec, our helper,
# vhci_hcd), 4 KiB each way through /dev/ttyACM* byte-identical against /dev/ttyGS0, detach; after each
# cycle the vhci port is free and cdc_acm is bound again on the bench side. The daemon's RSS and open
# fds are sampled at the start and after every cycle (drift reported; fds growing every cycle fails).
# Then, when the guest has network namespaces and `ip`: the client in its own namespace, joined to the
# daemon's by a veth pair; the link drops for 3 s mid-transfer (the device stays attached and the
# transfer completes); then for 22 s under a serial stream each way — long enough that the
# client gives the connection up (15 s) and resumes its session on a new one — and every byte arrives,
# in order; then for longer than the bridge's 30 s grace (the device leaves the kernel cleanly, the vhci
# port is freed, cdc_acm goes back to the bench once its resume grace is over, no oops).
. "$KTEST_LIB"
W=/run/ktest/ours-soak
NODE=${KTEST_NODE:-node}
CYCLES=${KTEST_SOAK_CYCLES:-10}
mkdir -p "$W/state"
load_modules || exit 1
make_acm_gadget || exit 1
tty_raw "$ACM_GADGET_TTY"

# ---------------------------------------------------------------- bench: our daemon (real USB backend)
PORT=47330
bench_config "$W/server.toml" "$PORT" "$W/state" 0.0.0.0   # all addresses: the client moves to its own namespace later
start_bench soak "$W/server.toml" "$W/daemon.log"
BENCH_ID=$("$NODE" "$KTEST_REPO/dist/server.js" id -c "$W/server.toml")

# ---------------------------------------------------------------- client: helper, polkit, an unprivileged user
attach_user soak
alice_key "$W/server.toml"
client() {  # client BENCH_ADDR : the attach command line (setpriv execs node: $ATTACH_PID is the client)
  CLIENT=(setpriv --reuid=alice --regid=alice --init-groups --reset-env "$NODE" "$KTEST_REPO/dist/remote-usb.js" attach --bench "$BENCH_ID@$1" --relay disabled --key-dir "$AK" --log-level debug)
}
stop_client() { kill -TERM "$1" 2>/dev/null; wait_until 30 _ktest_absent "/proc/$1"; }
acm_driver_back() { wait_until "${1:-15}" sh -c "[ \"\$(basename \"\$(readlink /sys/bus/usb/devices/$ACM_LOCAL_BUSID:1.0/driver)\")\" = cdc_acm ]"; }
daemon_rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$DAEMON/status"; }
daemon_fds() { local f n=0; for f in /proc/$DAEMON/fd/*; do n=$((n + 1)); done; echo $n; }
oops() { dmesg | grep -m3 -E 'BUG:|Oops|WARNING: CPU|general protection'; }

# ---------------------------------------------------------------- soak: attach / 4 KiB each way / detach
client "127.0.0.1:$PORT"
RSS0=$(daemon_rss_kb) FDS0=$(daemon_fds)
FD_SERIES=$FDS0 RSS_SERIES=$RSS0 OK_CYCLES=0
ktest_info "soak: $CYCLES cycles; daemon at start: RSS ${RSS0} kB, ${FDS0} fds"
for i in $(seq 1 "$CYCLES"); do
  ok=1
  if time_attach soak $ACM_VID $ACM_PID --bg "${CLIENT[@]}" "$ACM_LOCAL_BUSID"; then
    C=$ATTACH_PID P=$IMP_PORT
    tty_xfer "/dev/$IMP_TTY" "$ACM_GADGET_TTY" 4096 soak_out 60 || ok=0
    tty_xfer "$ACM_GADGET_TTY" "/dev/$IMP_TTY" 4096 soak_in 60 || ok=0
    time_detach soak $ACM_VID $ACM_PID "$P" stop_client "$C" || ok=0
    vhci_port_free "$P" || { ok=0; ktest_fail soak.port_free "cycle $i: vhci port $P state $(vhci_port_state "$P")"; }
  else
    ok=0
    [ -n "${ATTACH_PID:-}" ] && kill -KILL "$ATTACH_PID" 2>/dev/null
  fi
  acm_driver_back 15 || { ok=0; ktest_fail soak.driver_back "cycle $i: bench-side driver $(driver_of "$ACM_LOCAL_BUSID:1.0")"; }
  [ $ok = 1 ] && OK_CYCLES=$((OK_CYCLES + 1))
  FD_SERIES="$FD_SERIES $(daemon_fds)" RSS_SERIES="$RSS_SERIES $(daemon_rss_kb)"
done
RSS1=$(daemon_rss_kb) FDS1=$(daemon_fds)
ktest_info "soak: daemon fds per cycle: $FD_SERIES; RSS kB per cycle: $RSS_SERIES"
ktest_metric soak_daemon_rss_start "$RSS0" kB
ktest_metric soak_daemon_rss_end "$RSS1" kB
ktest_metric soak_daemon_rss_drift "$((RSS1 - RSS0))" kB
ktest_metric soak_daemon_fds_start "$FDS0" fds
ktest_metric soak_daemon_fds_end "$FDS1" fds
[ "$OK_CYCLES" = "$CYCLES" ] && ktest_pass soak.cycles "$CYCLES/$CYCLES cycles attach → 4 KiB each way → detach → port free, cdc_acm back" \
  || ktest_fail soak.cycles "$OK_CYCLES/$CYCLES cycles clean"
# fds: a leak grows with every cycle; a few fds that come and go (timers, sockets) do not
read -r -a F <<< "$FD_SERIES"
rises=0
for ((k = 1; k < ${#F[@]}; k++)); do [ "${F[k]}" -gt "${F[k-1]}" ] && rises=$((rises + 1)); done
if [ "$CYCLES" -ge 4 ] && [ $((FDS1 - FDS0)) -ge $((CYCLES / 2)) ] && [ "$rises" -ge $((CYCLES * 3 / 4)) ]; then
  ktest_fail soak.fds_steady "daemon fds grow with the cycles: $FD_SERIES"
else
  ktest_pass soak.fds_steady "daemon fds $FDS0 → $FDS1 over $CYCLES cycles ($rises rises): $FD_SERIES"
fi

# ---------------------------------------------------------------- network drops: client in its own namespace
NS=ktest-client VB=vkb VC=vkc
if ! command -v ip > /dev/null; then
  ktest_info "netdrop: skipped: no 'ip' in the guest (iproute2); the host-side test (test/integration/network-drop.test.ts) covers drops"
elif ! { modprobe veth 2>/dev/null; ip netns add "$NS" 2>"$W/netns.err"; }; then
  ktest_info "netdrop: skipped: no network namespaces in the guest ($(cat "$W/netns.err"))"
else
  ip link add "$VB" type veth peer name "$VC" && ip link set "$VC" netns "$NS" \
    && ip addr add 10.99.0.1/24 dev "$VB" && ip link set "$VB" up \
    && ip -n "$NS" addr add 10.99.0.2/24 dev "$VC" && ip -n "$NS" link set "$VC" up && ip -n "$NS" link set lo up \
    && ktest_pass netdrop.setup "client namespace $NS, veth $VB (10.99.0.1) ⇄ $VC (10.99.0.2)" \
    || ktest_fail netdrop.setup "veth setup failed"
  client "10.99.0.1:$PORT"
  if time_attach netdrop $ACM_VID $ACM_PID --bg ip netns exec "$NS" "${CLIENT[@]}" "$ACM_LOCAL_BUSID"; then
    C=$ATTACH_PID P=$IMP_PORT T=$IMP_TTY
    # The transfers across the drops use the attached tty through one fd opened before them: every open of
    # a cdc_acm tty raises DTR with a control URB (SET_CONTROL_LINE_STATE), which waits for the link, so a
    # transfer that opened it under a drop would only begin once the link is back.
    exec {HOLD}<>"/dev/$T"; tty_raw "/dev/$T"
    # stream_spans_drop NAME DIR DOWN_S: the writer began under the drop (tty_xfer's XFER_START_US) and the
    # last byte arrived after the link came back (its time in $W/up.NAME, ms): the stream waited through it
    stream_spans_drop() {
      local up start=$((XFER_START_US / 1000)); up=$(cat "$W/up.$1" 2>/dev/null || echo 0)
      ktest_info "netdrop: 256 KiB $2 across a $3 s drop, ms after the link went down: writing from +$((start - DROP_T0)), last byte +$((STREAM_T1 - DROP_T0)), link up at +$((up - DROP_T0))"
      if [ "$up" -gt 0 ] && [ "$start" -gt 0 ] && [ "$start" -lt "$up" ] && [ "$STREAM_T1" -gt "$up" ]; then
        ktest_pass "$1.spanned" "the $2 stream began $((up - start)) ms before the link came back and ended $((STREAM_T1 - up)) ms after"
      else
        ktest_fail "$1.spanned" "writing from +$((start - DROP_T0)) ms, last byte +$((STREAM_T1 - DROP_T0)) ms, link up at +$((up - DROP_T0)) ms"
      fi
    }
    # 3 s drop under a 256 KiB transfer: Iroh carries the connection through it
    # (/bin/sleep in the background job: ktest_sleep's fifo read came back at once there)
    # (both ends of the veth go down: one end down alone was seen to let traffic through one way)
    DROP_T0=$(ktest_now_ms); ip link set "$VB" down; ip -n "$NS" link set "$VC" down
    ( sleep 3; ip -n "$NS" link set "$VC" up; ip link set "$VB" up; ktest_now_ms > "$W/up.netdrop_short" ) & DROPPER=$!
    KTEST_XFER_TRACE=1 tty_xfer "fd:$HOLD" "$ACM_GADGET_TTY" 262144 netdrop_short_out 90
    STREAM_T1=$(ktest_now_ms)
    wait "$DROPPER"; ip -n "$NS" link set "$VC" up; ip link set "$VB" up
    stream_spans_drop netdrop_short out 3
    if [ -d "/proc/$C" ] && ! vhci_port_free "$P" && [ -e "/dev/$T" ]; then
      ktest_pass netdrop.short_attached "after the 3 s drop: still attached (vhci port $P, /dev/$T), client running"
    else
      ktest_fail netdrop.short_attached "port $P state $(vhci_port_state "$P"), /dev/$T $( [ -e "/dev/$T" ] && echo present || echo gone)"
    fi
    tty_xfer "$ACM_GADGET_TTY" "/dev/$T" 4096 netdrop_after_short_in 60
    # A 22 s drop under a serial stream each way: the link goes down first and the stream starts under
    # it, so it must span the drop; the client gives the connection up (15 s of silence, checked every
    # 5 s), reconnects when the link is back and resumes its session; every byte arrives, in order.
    for dir in out in; do
      DROP_T0=$(ktest_now_ms)
      ip link set "$VB" down; ip -n "$NS" link set "$VC" down
      ( sleep 22; ip -n "$NS" link set "$VC" up; ip link set "$VB" up; ktest_now_ms > "$W/up.netdrop_resume_$dir" ) & DROPPER=$!
      if [ $dir = out ]; then KTEST_XFER_TRACE=1 tty_xfer "fd:$HOLD" "$ACM_GADGET_TTY" 262144 netdrop_resume_out 150
      else KTEST_XFER_TRACE=1 tty_xfer "$ACM_GADGET_TTY" "fd:$HOLD" 262144 netdrop_resume_in 150; fi
      STREAM_T1=$(ktest_now_ms)
      wait "$DROPPER"; ip -n "$NS" link set "$VC" up; ip link set "$VB" up
      stream_spans_drop "netdrop_resume_$dir" "$dir" 22
    done
    exec {HOLD}>&-
    n=$(grep -c 'resuming its session' "$W/daemon.log")
    [ "$n" -ge 2 ] && ktest_pass netdrop.resumed "the bench resumed the client's session after each drop ($n times)" \
      || ktest_fail netdrop.resumed "resumes in the daemon log: $n (2 drops)"
    [ "$(vhci_port_state "$P")" = 006 ] && ktest_pass netdrop.resume_attached "after the 22 s drops: still attached (vhci port $P)" \
      || ktest_fail netdrop.resume_attached "port $P state $(vhci_port_state "$P")"
    # a drop longer than the bridge's 30 s grace (the client gives the connection up after 15 s first)
    t0=$(ktest_now_ms)
    ip link set "$VB" down
    if wait_until 75 vhci_port_free "$P"; then
      t1=$(ktest_now_ms)
      ktest_metric netdrop_long_port_freed_after "$((t1 - t0))" ms
      ktest_pass netdrop.long_port_freed "link down for good: the device left the kernel and vhci port $P is free after $(((t1 - t0) / 1000)) s"
    else
      ktest_fail netdrop.long_port_freed "vhci port $P state $(vhci_port_state "$P") after 75 s"
    fi
    wait_until 10 _ktest_absent "/dev/$T" && ktest_pass netdrop.long_tty_gone "/dev/$T gone" || ktest_fail netdrop.long_tty_gone "/dev/$T still there"
    wait_until 20 _ktest_absent "/proc/$C" && ktest_pass netdrop.long_client_exit "the client ended: $(grep -m1 -iE 'bridge closed|offline' /run/ktest/netdrop.attach.log)" \
      || { ktest_fail netdrop.long_client_exit "client still running"; kill -KILL "$C"; }
    acm_driver_back 75 && ktest_pass netdrop.long_driver_back "the bench let the silent client go (after its resume grace) and cdc_acm is bound again" \
      || ktest_fail netdrop.long_driver_back "bench-side driver $(driver_of "$ACM_LOCAL_BUSID:1.0")"
    ip link set "$VB" up
    grep -v repeated /run/ktest/netdrop.attach.log | grep -iE 'offline|grace|bridge|connected|lost' | sed 's/^/  client: /' | tail -12
  fi
  ip netns del "$NS" 2>/dev/null
fi

if [ -z "$(vhci_ports_in_use)" ]; then ktest_pass soak.vhci_all_free "no vhci port in use"; else ktest_fail soak.vhci_all_free "$(vhci_ports_in_use | tr '\n' ';')"; fi
if [ -n "$(oops)" ]; then ktest_fail soak.kernel_healthy "$(oops)"; else ktest_pass soak.kernel_healthy "no oops/BUG/WARNING in dmesg"; fi
kill -TERM "$DAEMON"; wait_until 10 _ktest_absent "/proc/$DAEMON" && ktest_pass soak.daemon_stop "clean stop" || { ktest_fail soak.daemon_stop "daemon still running"; kill -KILL "$DAEMON"; }
grep -E 'claimed|released|silent|nothing heard|warn|error' "$W/daemon.log" | sed 's/^/  daemon: /' | tail -15
exit 0
