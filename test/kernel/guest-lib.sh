# Real-kernel test harness: shell library for scenarios running inside the qemu guest.
# Scenarios start with:   . "$KTEST_LIB"        (guest-init.sh exports KTEST_LIB, KTEST_REPO, ...)
#
# Result protocol (one line each, on the console AND on /dev/ttyS1 which the host records):
#   KTEST PASS <name> [detail...]          a check passed
#   KTEST FAIL <name> <reason...>          a check failed
#   KTEST METRIC <name> <value> <unit>     a measurement
#   KTEST INFO <text...>                   anything worth keeping in results.log
#   KTEST BOOTED ... / KTEST DONE <rc>     emitted by guest-init.sh only
# Names are single words ([A-Za-z0-9_.-]); the host counts PASS/FAIL lines.
#
# Environment from guest-init.sh: KTEST_REPO (repo root, same path as on the host), KTEST_SCRIPT,
# KTEST_NAME, KTEST_NODE (host's node binary), KTEST_FTDI (FTDI peer mode on the host or "none"),
# KTEST_GUEST_TIMEOUT, KTEST_RESULTS_DEV. The host's whole / is visible read-only (writes land in a
# tmpfs overlay and vanish at power-off); /run is a fresh tmpfs, /tmp is the host's /tmp seen through
# that overlay (so scripts kept in the host's /tmp can run as guest scripts).

# ------------------------------------------------------------------------------------------ results
ktest_emit() {  # ktest_emit WORD args... -> "KTEST WORD args..."
  local line="KTEST $*"
  line=${line//$'\n'/ }
  printf '%s\n' "$line"
  [ -n "${KTEST_RESULTS_DEV:-}" ] && [ -c "$KTEST_RESULTS_DEV" ] && printf '%s\n' "$line" > "$KTEST_RESULTS_DEV" 2>/dev/null
  return 0
}
ktest_pass()   { ktest_emit PASS "$@"; }
ktest_fail()   { ktest_emit FAIL "$@"; return 1; }
ktest_metric() { ktest_emit METRIC "$1" "$2" "${3:-}"; }
ktest_info()   { ktest_emit INFO "$@"; }
ktest_log()    { echo "[$(cut -d' ' -f1 /proc/uptime)s] === $*"; }   # console only
ktest_check() { # ktest_check NAME CMD... : PASS if CMD succeeds, else FAIL with its exit code
  local name=$1; shift
  if "$@"; then ktest_pass "$name"; else ktest_fail "$name" "command failed (rc=$?): $*"; fi
}

# ------------------------------------------------------------------------------------------ time
ktest_now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }            # no fork
ktest_now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $(( t / 1000 )); }
# ktest_sleep SECONDS: fork-free sleep (read with a timeout on a private fifo); fine-grained polling
# with /bin/sleep costs several ms per fork under TCG.
ktest_sleep() {
  if [ -z "${_KTEST_TICK_FD:-}" ]; then
    local f=/run/ktest/tick.$$
    mkdir -p /run/ktest && { [ -p "$f" ] || mkfifo "$f"; } && exec {_KTEST_TICK_FD}<>"$f" || { sleep "$1"; return 0; }
  fi
  read -r -t "$1" -u "$_KTEST_TICK_FD" _ 2>/dev/null
  return 0
}
_ktest_deadline_us() { echo $(( $(ktest_now_us) + ${1%.*} * 1000000 )); }

# wait_until TIMEOUT_S CMD... : poll CMD every 20 ms until it succeeds (0) or the timeout passes (1)
wait_until() {
  local dl; dl=$(_ktest_deadline_us "$1"); shift
  while :; do
    "$@" && return 0
    [ "$(ktest_now_us)" -ge "$dl" ] && return 1
    ktest_sleep 0.02
  done
}
wait_for_path()    { wait_until "${2:-10}" test -e "$1"; }    # wait_for_path /dev/ttyACM0 10
wait_for_no_path() { wait_until "${2:-10}" _ktest_absent "$1"; }
_ktest_absent()    { [ ! -e "$1" ]; }

# ------------------------------------------------------------------------------------------ system
ktest_mount_basics() {  # idempotent; guest-init.sh calls it before the scenario runs
  mountpoint -q /proc || mount -t proc proc /proc
  mountpoint -q /sys || mount -t sysfs sys /sys
  mountpoint -q /dev || mount -t devtmpfs dev /dev
  mountpoint -q /run || mount -t tmpfs -o mode=0755 tmpfs /run
  mkdir -p /dev/pts /dev/shm /run/lock /run/ktest
  mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
  mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
  [ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
  if ! mountpoint -q /sys/kernel/config; then
    modprobe configfs 2>/dev/null
    mount -t configfs configfs /sys/kernel/config 2>/dev/null
  fi
  return 0
}

# There is no udev in the guest: drivers must be loaded before their devices appear.
KTEST_DEFAULT_MODULES="xhci_pci usbip_core usbip_host vhci_hcd dummy_hcd libcomposite usb_f_acm cdc_acm usbserial ftdi_sio"
load_modules() {  # load_modules [module...]  (default: $KTEST_DEFAULT_MODULES); FAIL line per failure
  local m rc=0
  for m in ${*:-$KTEST_DEFAULT_MODULES}; do
    modprobe "$m" 2>&1 || { ktest_fail "modprobe.$m" "modprobe $m failed"; rc=1; }
  done
  return $rc
}

# ------------------------------------------------------------------------------------------ USB lookups
# busid_of VID PID [local|vhci|any]: first USB device with that idVendor:idProduct (hex, no 0x), e.g.
# busid_of 1d6b 0104 vhci -> 4-1. "local" = not under vhci_hcd (the real/emulated/gadget device),
# "vhci" = an imported copy.
busid_of() {
  local vid=${1#0x} pid=${2#0x} where=${3:-any} d real
  for d in /sys/bus/usb/devices/*; do
    [ -f "$d/idVendor" ] || continue
    [ "$(< "$d/idVendor")" = "$vid" ] && [ "$(< "$d/idProduct")" = "$pid" ] || continue
    real=$(readlink -f "$d")
    case "$where:$real" in
      any:*|vhci:*/vhci_hcd*) ;;
      local:*/vhci_hcd*|vhci:*) continue ;;
    esac
    echo "${d##*/}"; return 0
  done
  return 1
}
# tty_of_busid BUSID: the tty (ttyACM*/ttyUSB*/...) a driver created on the device's interfaces
tty_of_busid() {
  local b=$1 t
  for t in /sys/bus/usb/devices/"$b":*/tty/* /sys/bus/usb/devices/"$b":*/ttyUSB*; do
    [ -e "$t" ] || continue
    echo "${t##*/}"; return 0
  done
  return 1
}
driver_of() { local l; l=$(readlink "/sys/bus/usb/devices/$1/driver" 2>/dev/null) && echo "${l##*/}"; }
# wait_tty_of VID PID WHERE TIMEOUT_S: wait until the device exists AND its tty node is in /dev; prints
# "BUSID TTY". Used for enumeration timing.
wait_tty_of() {
  local dl b t; dl=$(_ktest_deadline_us "${4:-10}")
  while :; do
    if b=$(busid_of "$1" "$2" "$3") && t=$(tty_of_busid "$b") && [ -c "/dev/$t" ]; then
      echo "$b $t"; return 0
    fi
    [ "$(ktest_now_us)" -ge "$dl" ] && return 1
    ktest_sleep 0.01
  done
}

# ------------------------------------------------------------------------------------------ vhci
VHCI_SYSFS=/sys/devices/platform/vhci_hcd.0
# vhci_status: all port lines of all vhci controllers: "hub port sta spd dev sockfd local_busid"
vhci_status() { cat /sys/devices/platform/vhci_hcd.*/status* 2>/dev/null | awk '$1 == "hs" || $1 == "ss"'; }
vhci_port_of_busid() { vhci_status | awk -v b="$1" '$7 == b {print $2 + 0; f=1; exit} END {exit !f}'; }
vhci_port_state() { vhci_status | awk -v p="$1" '$2 + 0 == p {print $3; f=1; exit} END {exit !f}'; }
vhci_port_free() { [ "$(vhci_port_state "$1")" = 004 ]; }      # 004 = VDEV_ST_NULL
vhci_ports_in_use() { vhci_status | awk '$3 != "004"' ; }

# time_attach NAME VID PID [--bg] CMD... : run CMD, which must import VID:PID into vhci_hcd (e.g.
# `usbip attach -r 127.0.0.1 -b 1-1`, or our own client), then wait for the imported copy's tty in /dev.
# Emits METRIC NAME_attach_cmd_ms (CMD's own duration; omitted with --bg), METRIC NAME_enum_ms (CMD start
# -> /dev/tty* of the imported copy exists) and PASS/FAIL NAME.enumerate. With --bg CMD keeps running
# (a client that relays while attached): its pid is left in ATTACH_PID. Sets IMP_BUSID IMP_TTY IMP_PORT ENUM_MS.
# Timeout: ATTACH_TIMEOUT_S (default 30).
time_attach() {
  local name=$1 vid=$2 pid=$3 bg= t0 t1 t2 out r rc
  shift 3
  [ "${1:-}" = --bg ] && { bg=1; shift; }
  IMP_BUSID= IMP_TTY= IMP_PORT= ATTACH_PID=
  ktest_log "$name: attach: $*"
  t0=$(ktest_now_us)
  if [ -n "$bg" ]; then
    "$@" > "/run/ktest/$name.attach.log" 2>&1 & ATTACH_PID=$!
  else
    out=$("$@" 2>&1); rc=$?
    t1=$(ktest_now_us)
    [ $rc = 0 ] || { ktest_fail "$name.attach" "rc=$rc: $*: $out"; return 1; }
  fi
  r=$(wait_tty_of "$vid" "$pid" vhci "${ATTACH_TIMEOUT_S:-30}") || {
    ktest_fail "$name.enumerate" "imported $vid:$pid got no tty within ${ATTACH_TIMEOUT_S:-30} s"
    vhci_ports_in_use | sed 's/^/  vhci: /'
    [ -n "$bg" ] && tail -20 "/run/ktest/$name.attach.log" | sed 's/^/  attach log: /'
    return 1; }
  t2=$(ktest_now_us)
  ATTACH_T0_US=$t0 ATTACH_T2_US=$t2
  IMP_BUSID=${r% *} IMP_TTY=${r#* }
  IMP_PORT=$(vhci_port_of_busid "$IMP_BUSID")
  [ -z "$bg" ] && ATTACH_CMD_MS=$(( (t1 - t0) / 1000 )) && ktest_metric "${name}_attach_cmd_ms" "$ATTACH_CMD_MS" ms
  ENUM_MS=$(( (t2 - t0) / 1000 ))
  ktest_metric "${name}_enum_ms" "$ENUM_MS" ms
  ktest_pass "$name.enumerate" "imported as $IMP_BUSID (vhci port $IMP_PORT, $(cat "/sys/bus/usb/devices/$IMP_BUSID/speed") Mbit/s), driver $(driver_of "$IMP_BUSID:1.0") -> /dev/$IMP_TTY in $(( (t2 - t0) / 1000 )) ms"
}
# attach_breakdown NAME LOG: where the time of our last time_attach went, from the client's log
# timestamps (same wall clock as ktest_now_us): METRIC NAME_to_helper_ms (client start-up, Iroh connect,
# claim: until pkexec runs), NAME_helper_ms (pkexec + polkit + the helper's own start-up and the vhci
# attach) and NAME_kernel_ms (helper done -> the imported copy's tty exists: enumeration through the
# bridge; also left in ATTACH_KERNEL_MS).
attach_breakdown() {
  local name=$1 log=$2 pk hd
  pk=$(grep -m1 'running .*pkexec' "$log" | cut -d' ' -f1) || return 0
  hd=$(grep -m1 'remote-usb-helper: attached' "$log" | cut -d' ' -f1) || return 0
  [ -n "$pk" ] && [ -n "$hd" ] || return 0
  pk=$(date -d "$pk" +%s%6N) hd=$(date -d "$hd" +%s%6N)
  ktest_metric "${name}_to_helper_ms" $(( (pk - ATTACH_T0_US) / 1000 )) ms
  ktest_metric "${name}_helper_ms" $(( (hd - pk) / 1000 )) ms
  ATTACH_KERNEL_MS=$(( (ATTACH_T2_US - hd) / 1000 ))
  ktest_metric "${name}_kernel_ms" "$ATTACH_KERNEL_MS" ms
}
# time_detach NAME VID PID PORT CMD... : run CMD (e.g. `usbip detach -p 0`, or stopping our client), then
# require the vhci port to be free (state 004) and the imported copy gone. METRIC NAME_detach_ms,
# PASS/FAIL NAME.detach.
time_detach() {
  local name=$1 vid=$2 pid=$3 port=$4 t0 out rc
  shift 4
  ktest_log "$name: detach: $*"
  t0=$(ktest_now_us)
  out=$("$@" 2>&1); rc=$?
  [ $rc = 0 ] || { ktest_fail "$name.detach" "rc=$rc: $*: $out"; return 1; }
  if wait_until 15 vhci_port_free "$port" && wait_until 10 _ktest_no_vhci_copy "$vid" "$pid"; then
    ktest_metric "${name}_detach_ms" $(( ($(ktest_now_us) - t0) / 1000 )) ms
    ktest_pass "$name.detach" "vhci port $port free again, imported copy gone"
  else
    ktest_fail "$name.detach" "vhci port $port state $(vhci_port_state "$port"), imported copy $(busid_of "$vid" "$pid" vhci)"
  fi
}
_ktest_no_vhci_copy() { ! busid_of "$1" "$2" vhci >/dev/null; }

# ------------------------------------------------------------------------------------------ Linux usbip (export side)
USBIPD_PID_FILE=/run/ktest/usbipd.pid
_ktest_tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
start_usbipd() {  # usbipd -D on 3240, waits until it listens
  usbipd -D --pid="$USBIPD_PID_FILE" || { ktest_fail usbipd.start "usbipd -D failed"; return 1; }
  wait_until 10 _ktest_tcp_open 127.0.0.1 3240 || { ktest_fail usbipd.start "usbipd not listening on 3240"; return 1; }
}
stop_usbipd() { [ -s "$USBIPD_PID_FILE" ] && kill "$(cat "$USBIPD_PID_FILE")" 2>/dev/null; rm -f "$USBIPD_PID_FILE"; return 0; }
usbip_bind() {  # usbip_bind BUSID [NAME] : hand the device to usbip-host (exportable); PASS/FAIL NAME.bind
  local b=$1 name=${2:-usbip.$1} out
  out=$(usbip bind -b "$b" 2>&1) && [ "$(driver_of "$b")" = usbip-host ] &&
    ktest_pass "$name.bind" "$b now on usbip-host" || ktest_fail "$name.bind" "usbip bind -b $b: $out (driver $(driver_of "$b"))"
}
usbip_unbind() {  # usbip_unbind BUSID VID PID [NAME] : back to its local driver, whose tty must reappear
  local b=$1 vid=$2 pid=$3 name=${4:-usbip.$1} out r
  out=$(usbip unbind -b "$b" 2>&1) || { ktest_fail "$name.unbind" "usbip unbind -b $b: $out"; return 1; }
  if r=$(wait_tty_of "$vid" "$pid" local 15); then
    ktest_pass "$name.unbind" "$b back on local driver $(driver_of "$b:1.0") as /dev/${r#* }"
  else
    ktest_fail "$name.unbind" "$b driver after unbind: $(driver_of "$b") (no local tty)"
  fi
}

# ------------------------------------------------------------------------------------------ gadget
# make_acm_gadget [NAME] : configfs CDC-ACM gadget (1d6b:0104) bound to dummy_hcd's UDC. The device side
# ("firmware" end) is /dev/ttyGS<n>; the host side enumerates locally as a cdc_acm ttyACM*. Sets
# ACM_GADGET_DIR, ACM_GADGET_TTY (/dev/ttyGS0), ACM_LOCAL_BUSID, ACM_LOCAL_TTY (e.g. ttyACM0).
ACM_VID=1d6b ACM_PID=0104
make_acm_gadget() {
  local name=${1:-ktest_acm} g udc
  g=/sys/kernel/config/usb_gadget/$name
  [ -d /sys/kernel/config/usb_gadget ] || { ktest_fail gadget.configfs "no /sys/kernel/config/usb_gadget (libcomposite loaded?)"; return 1; }
  udc=$(ls /sys/class/udc 2>/dev/null | grep -m1 dummy_udc) || { ktest_fail gadget.udc "no dummy_udc in /sys/class/udc (dummy_hcd loaded?)"; return 1; }
  mkdir "$g" || { ktest_fail gadget.mkdir "mkdir $g failed"; return 1; }
  echo 0x$ACM_VID > "$g/idVendor"; echo 0x$ACM_PID > "$g/idProduct"
  echo 0x0200 > "$g/bcdUSB"; echo 0x0100 > "$g/bcdDevice"
  mkdir "$g/strings/0x409"
  echo KTEST-ACM-0001 > "$g/strings/0x409/serialnumber"
  echo remote-usb-ktest > "$g/strings/0x409/manufacturer"
  echo "ktest ACM gadget" > "$g/strings/0x409/product"
  mkdir -p "$g/configs/c.1/strings/0x409"; echo ACM > "$g/configs/c.1/strings/0x409/configuration"
  echo 100 > "$g/configs/c.1/MaxPower"
  mkdir "$g/functions/acm.usb0" && ln -s "$g/functions/acm.usb0" "$g/configs/c.1/" || { ktest_fail gadget.function "acm function failed"; return 1; }
  local port_num; port_num=$(cat "$g/functions/acm.usb0/port_num" 2>/dev/null || echo 0)
  echo "$udc" > "$g/UDC" || { ktest_fail gadget.bind "binding gadget to $udc failed"; return 1; }
  ACM_GADGET_DIR=$g ACM_GADGET_TTY=/dev/ttyGS$port_num
  wait_for_path "$ACM_GADGET_TTY" 10 || { ktest_fail gadget.ttyGS "$ACM_GADGET_TTY did not appear"; return 1; }
  local r; r=$(wait_tty_of $ACM_VID $ACM_PID local 15) || { ktest_fail gadget.enumerate "gadget did not enumerate locally with a cdc_acm tty in 15 s"; return 1; }
  ACM_LOCAL_BUSID=${r% *} ACM_LOCAL_TTY=${r#* }
  return 0
}
remove_acm_gadget() {  # remove_acm_gadget [NAME]
  local g=/sys/kernel/config/usb_gadget/${1:-ktest_acm}
  [ -d "$g" ] || return 0
  echo "" > "$g/UDC" 2>/dev/null
  rm -f "$g/configs/c.1/acm.usb0"
  rmdir "$g/configs/c.1/strings/0x409" "$g/configs/c.1" "$g/functions/acm.usb0" "$g/strings/0x409" "$g" 2>/dev/null
  [ ! -d "$g" ]
}

# ------------------------------------------------------------------------------------------ qemu FTDI
# qemu's emulated FT232 (-device usb-serial on qemu-xhci), 0403:6001. Its serial data goes to a unix
# socket on the host served by run-guest.mjs in mode $KTEST_FTDI (echo: bytes come straight back).
FTDI_VID=0403 FTDI_PID=6001

# ------------------------------------------------------------------------------------------ tty data
bench_config() {  # bench_config FILE PORT STATE_DIR [HOST] : our daemon's config for a scenario (127.0.0.1, no relay)
  printf 'name = "ktest-bench"\nlisten = "%s:%s"\nstate_dir = "%s"\nlog_level = "debug"\n[relay]\nmode = "disabled"\n' "${4:-127.0.0.1}" "$2" "$3" > "$1"
}
# start_bench NAME CONFIG LOG [TIMEOUT_S]: runs our daemon (real usb backend) in the background and waits
# for 'serving as'; DAEMON is the node process itself, so signals reach it. FAIL NAME.daemon_start + exit if not.
start_bench() {
  "${KTEST_NODE:-node}" "$KTEST_REPO/dist/server.js" run -c "$2" > "$3" 2>&1 & DAEMON=$!
  wait_until "${4:-30}" grep -q 'serving as' "$3" || { cat "$3"; ktest_fail "$1.daemon_start" "daemon did not start"; exit 1; }
}
# attach_user NAME [GROUP...]: the developer side of an attach — our helper installed for group plugdev,
# the system D-Bus and polkitd running, and the unprivileged user alice in plugdev (and GROUPs).
# The --group rule says yes only to an active local session, and alice runs here without any session
# (no logind), like a Remote-SSH user: so the guest also gets the rule helper/README.md gives an admin
# for such users (YES for alice, any session) — the documented opt-in, written before polkitd starts.
attach_user() {
  local name=$1; shift
  ktest_check "$name.helper_install" "${KTEST_NODE:-node}" "$KTEST_REPO/dist/helper.js" install --group plugdev
  cat > /etc/polkit-1/rules.d/48-remote-usb-ssh.rules <<'RULE'
polkit.addRule(function (action, subject) {
    if (action.id == "dev.remoteusb.helper.attach" && subject.user == "alice") {
        return polkit.Result.YES;
    }
});
RULE
  start_system_dbus || exit 1
  start_polkitd || exit 1
  ktest_add_user alice plugdev "$@" || { ktest_fail "$name.user_add" "useradd alice failed"; exit 1; }
}
# alice_key CONFIG: alice's client key in AK (private to her), her endpoint id in ALICE_ID, allowed on the bench.
alice_key() {
  AK=/run/ktest/alice-key; mkdir -p "$AK"; chown alice "$AK"; chmod 700 "$AK"
  ALICE_ID=$(run_as alice "${KTEST_NODE:-node}" "$KTEST_REPO/dist/remote-usb.js" id --key-dir "$AK")
  "${KTEST_NODE:-node}" "$KTEST_REPO/dist/server.js" allow "$ALICE_ID" --name alice -c "$1" > /dev/null
}
tty_raw() { stty -F "$1" raw -echo -echoe -echok -echoctl -echoke -ixon -ixoff -crtscts clocal "${@:2}"; }
_ktest_mbps() { awk -v b="$1" -v us="$2" 'BEGIN { if (us <= 0) us = 1; printf "%.3f", b / us }'; }  # bytes/us = MB/s
# tty_xfer SRC DST BYTES NAME [TIMEOUT_S]: write BYTES random bytes into tty SRC, read them from tty DST,
# require byte-identical; PASS/FAIL NAME and METRIC NAME_MBps. Sets XFER_MBPS, XFER_US and XFER_START_US (when
# the writer began). SRC / DST: a tty path, or fd:N for one the caller holds open (and raw).
tty_xfer() {  # tty_xfer SRC DST BYTES NAME [TIMEOUT] [RETRIES]
  local src=$1 dst=$2 n=$3 name=$4 to=${5:-60} retries=${6:-0} f=/run/ktest/xfer.$name rp t0 t1 got
  XFER_MBPS= XFER_US= XFER_START_US=
  local tr=${KTEST_XFER_TRACE:+$(ktest_now_ms)}
  _xtrace() { [ -z "$tr" ] || ktest_info "$name: +$(( $(ktest_now_ms) - tr )) ms $1"; }
  head -c "$n" /dev/urandom > "$f.in"
  # SRC or DST may be fd:N, a tty the caller holds open and raw: every open of a cdc_acm tty raises DTR
  # with a control URB, which waits for the link while it is down
  local close_r=1 close_w=1
  if [[ $dst == fd:* ]]; then _xr=${dst#fd:} close_r=; else exec {_xr}<>"$dst"; fi
  if [[ $src == fd:* ]]; then _xw=${src#fd:} close_w=; else exec {_xw}<>"$src"; fi
  _xtrace "opened $dst, $src"
  _xclose() { [ -z "$close_r" ] || exec {_xr}>&-; [ -z "$close_w" ] || exec {_xw}>&-; }
  { [ -z "$close_r" ] || tty_raw "$dst"; } && { [ -z "$close_w" ] || tty_raw "$src"; } || { _xclose; ktest_fail "$name" "stty on $src/$dst failed"; return 1; }
  _xtrace "stty done"
  timeout 0.3 cat <&$_xr > /dev/null 2>&1    # drop stale input
  timeout "$to" head -c "$n" <&$_xr > "$f.out" & rp=$!
  ktest_sleep 0.2
  t0=$(ktest_now_us) XFER_START_US=$t0
  _xtrace "writing"
  timeout "$to" cat "$f.in" >&$_xw
  _xtrace "written"
  wait $rp
  t1=$(ktest_now_us)
  _xtrace "read"
  _xclose
  got=$(stat -c %s "$f.out" 2>/dev/null || echo 0)
  if cmp -s "$f.in" "$f.out"; then
    XFER_US=$((t1 - t0)) XFER_MBPS=$(_ktest_mbps "$n" $((t1 - t0)))
    ktest_metric "${name}_MBps" "$XFER_MBPS" MB/s
    ktest_pass "$name" "$n bytes $src -> $dst identical in $((XFER_US / 1000)) ms"
    rm -f "$f.in" "$f.out"
  elif [ "$retries" -gt 0 ]; then
    # Linux's own tty path has no flow control towards a slow reader: under emulation it can drop bytes
    ktest_info "$name: $src -> $dst got $got/$n bytes; once more"
    tty_xfer "$src" "$dst" "$n" "$name" "$to" $((retries - 1))
  else
    ktest_fail "$name" "$src -> $dst: got $got/$n bytes$( [ "$got" = "$n" ] && echo ' but contents differ')"
  fi
}
# tty_echo_xfer TTY BYTES NAME [TIMEOUT_S]: the far end echoes (e.g. FTDI peer mode "echo"): write BYTES
# random bytes, read the same number back, require identical. METRIC NAME_MBps counts one direction
# (both directions carry BYTES at the same time).
tty_echo_xfer() {
  local tty=$1 n=$2 name=$3 to=${4:-60} f=/run/ktest/echo.$3 rp t0 t1 got
  XFER_MBPS= XFER_US=
  head -c "$n" /dev/urandom > "$f.in"
  exec {_xe}<>"$tty"
  tty_raw "$tty" || { exec {_xe}>&-; ktest_fail "$name" "stty on $tty failed"; return 1; }
  timeout 0.3 cat <&$_xe > /dev/null 2>&1
  timeout "$to" head -c "$n" <&$_xe > "$f.out" & rp=$!
  ktest_sleep 0.2
  t0=$(ktest_now_us)
  timeout "$to" cat "$f.in" >&$_xe
  wait $rp
  t1=$(ktest_now_us)
  exec {_xe}>&-
  got=$(stat -c %s "$f.out" 2>/dev/null || echo 0)
  if cmp -s "$f.in" "$f.out"; then
    XFER_US=$((t1 - t0)) XFER_MBPS=$(_ktest_mbps "$n" $((t1 - t0)))
    ktest_metric "${name}_MBps" "$XFER_MBPS" MB/s
    ktest_pass "$name" "$n bytes out and echoed back identical in $((XFER_US / 1000)) ms"
    rm -f "$f.in" "$f.out"
  else
    ktest_fail "$name" "$tty echo: got $got/$n bytes$( [ "$got" = "$n" ] && echo ' but contents differ')"
  fi
}

# ------------------------------------------------------------------------------------------ node
# ktest_node ARGS... : the host's node binary (same as `node` on PATH here); the repo is at $KTEST_REPO.
ktest_node() { "${KTEST_NODE:-node}" "$@"; }

# ------------------------------------------------------------------------------------------ users, dbus, polkit
# For the pkexec attach tests. pkexec refuses to run when its parent is PID 1 ("Refusing to render
# service to dead parents"); scenarios run as children of guest-init, so spawn pkexec from the scenario
# or a process it started (not via exec from something whose parent is PID 1).
ktest_add_user() {  # ktest_add_user NAME [GROUP...] : creates the groups if needed
  local u=$1 g; shift
  for g in "$@"; do getent group "$g" >/dev/null || groupadd "$g" || return 1; done
  id "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash ${1:+-G "$(IFS=,; echo "$*")"} "$u"
}
run_as() {  # run_as USER CMD... : run with that user's uid/gid/groups and a clean environment
  local u=$1; shift
  setpriv --reuid="$u" --regid="$u" --init-groups --reset-env "$@"
}
start_system_dbus() {  # sets DBUS_PID
  mkdir -p /run/dbus
  [ -s /etc/machine-id ] || dbus-uuidgen --ensure=/etc/machine-id 2>/dev/null
  DBUS_PID=$(dbus-daemon --system --fork --print-pid) || { ktest_fail dbus.start "dbus-daemon --system failed"; return 1; }
  wait_for_path /run/dbus/system_bus_socket 10 || { ktest_fail dbus.socket "no /run/dbus/system_bus_socket"; return 1; }
}
_ktest_polkit_on_bus() {
  dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.PolicyKit1 2>/dev/null | grep -q 'boolean true'
}
start_polkitd() {  # start_polkitd [TIMEOUT_S=40] : needs start_system_dbus first; sets POLKITD_PID
  local pk=/usr/lib/polkit-1/polkitd
  [ -x "$pk" ] || pk=/usr/libexec/polkitd
  [ -x "$pk" ] || { ktest_fail polkit.missing "polkitd binary not found"; return 1; }
  "$pk" --no-debug > /run/ktest/polkitd.log 2>&1 & POLKITD_PID=$!
  wait_until "${1:-40}" _ktest_polkit_on_bus || { ktest_fail polkit.start "polkitd not on the system bus after ${1:-40}s: $(tail -3 /run/ktest/polkitd.log | tr '\n' ' ')"; return 1; }
}
stop_polkit() {
  [ -n "${POLKITD_PID:-}" ] && kill "$POLKITD_PID" 2>/dev/null
  [ -n "${DBUS_PID:-}" ] && kill "$DBUS_PID" 2>/dev/null
  POLKITD_PID= DBUS_PID=
  return 0
}
