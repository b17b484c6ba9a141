#!/bin/bash
# Real-kernel test harness, guest side: PID 1 after the initramfs switch_root'ed into the overlay of the
# host's / (see setup.sh). The environment comes from the env file run-guest.mjs wrote (KTEST_* vars).
#
# Mounts the basics, announces "KTEST BOOTED", runs $KTEST_SCRIPT as a child (never as PID 1: pkexec and
# friends refuse a parent that is PID 1) under a timeout, reports "KTEST DONE <rc>", dumps dmesg to the
# console and powers the VM off. Results travel on /dev/ttyS1 (a socket on the host), the console on ttyS0.
export PATH="$(dirname "${KTEST_NODE:-/usr/bin/node}"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export HOME=/root LANG=C.UTF-8 TERM=dumb
export KTEST_LIB="$KTEST_REPO/test/kernel/guest-lib.sh"
export KTEST_RESULTS_DEV=${KTEST_RESULTS_DEV:-/dev/ttyS1}

poweroff_now() {
  sync
  exec {KTEST_RES_FD}>&- 2>/dev/null   # last close of ttyS1 waits until the UART has sent everything
  busybox poweroff -f 2>/dev/null
  echo o > /proc/sysrq-trigger
  while :; do sleep 1; done
}

# shellcheck source=guest-lib.sh
if ! . "$KTEST_LIB"; then
  echo "KTEST FAIL harness.guest-lib cannot source $KTEST_LIB"
  echo "KTEST FAIL harness.guest-lib cannot source $KTEST_LIB" > "$KTEST_RESULTS_DEV"
  poweroff_now
fi
ktest_mount_basics
# Keep ttyS1 open in PID 1 so its raw termios sticks while scenario commands open/close it per line.
stty -F "$KTEST_RESULTS_DEV" raw -echo 2>/dev/null
exec {KTEST_RES_FD}>"$KTEST_RESULTS_DEV"
hostname ktest 2>/dev/null
ip link set lo up 2>/dev/null || busybox ip link set lo up

ktest_emit BOOTED "uptime=$(cut -d' ' -f1 /proc/uptime)" "kernel=$(uname -r)" "script=$KTEST_SCRIPT"
echo "[ktest] guest-init: repo=$KTEST_REPO node=$KTEST_NODE timeout=${KTEST_GUEST_TIMEOUT}s ftdi=${KTEST_FTDI:-none}"

cd "$KTEST_REPO" || ktest_fail harness.repo "cannot cd to $KTEST_REPO"
timeout -k 5 "${KTEST_GUEST_TIMEOUT:-240}" bash "$KTEST_SCRIPT" {KTEST_RES_FD}>&- </dev/null
rc=$?
if [ $rc = 124 ] || [ $rc = 137 ]; then
  ktest_fail harness.timeout "scenario still running after ${KTEST_GUEST_TIMEOUT}s (guest-side timeout), killed"
  echo "----- ktest processes at timeout -----"; ps -N --ppid 2 -o pid,ppid,stat,etime,args 2>/dev/null | grep -v "^ *2 " | head -60
fi
cd /
echo "----- ktest dmesg begin -----"
dmesg 2>/dev/null
echo "----- ktest dmesg end -----"
ktest_emit DONE "$rc" "uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff_now
