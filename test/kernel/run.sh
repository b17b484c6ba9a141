#!/usr/bin/env bash
# Real-kernel test suite entry (npm run test:kernel): setup if needed, then every scenario under
# test/kernel/scenarios/ (or only those named: run.sh native-usbip ...) in its own qemu guest.
# Prints a summary + metric table and ends with the line "N passed, N failed" (counted from the
# KTEST PASS/FAIL lines of all scenarios). Exit status non-zero on any failure.
#
# Environment: KTEST_BUDGET_S  total time budget for all scenarios (default 2400 s); a scenario gets at
#              most what is left (and is reported failed, not run, when less than 60 s remain).
#              KTEST_SKIP_SETUP=1 skips setup.sh. KTEST_VERBOSE=1 streams each guest console live.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ART=${KTEST_ARTIFACTS_ROOT:-$REPO/test-artifacts/kernel}
BUDGET=${KTEST_BUDGET_S:-2400}
START=$SECONDS

finish() {  # finish PASSED FAILED
  echo "$1 passed, $2 failed"
  [ "$2" = 0 ] && exit 0 || exit 1
}

command -v node >/dev/null || { echo "[kernel-tests] ERROR: node not on PATH"; finish 0 1; }

if [ "${KTEST_SKIP_SETUP:-0}" != 1 ]; then
  echo "[kernel-tests] setup"
  if ! bash "$HERE/setup.sh"; then
    echo "[kernel-tests] ERROR: test/kernel/setup.sh failed"
    finish 0 1
  fi
fi

scenarios=()
if [ $# -gt 0 ]; then
  for n in "$@"; do
    f=$HERE/scenarios/${n%.sh}.sh
    [ -f "$f" ] || { echo "[kernel-tests] ERROR: no scenario $f"; finish 0 1; }
    scenarios+=("$f")
  done
else
  for f in "$HERE"/scenarios/*.sh; do [ -f "$f" ] && scenarios+=("$f"); done
fi
[ ${#scenarios[@]} -gt 0 ] || { echo "[kernel-tests] ERROR: no scenarios in $HERE/scenarios"; finish 0 1; }

mkdir -p "$ART"
status=()     # "name|OK|wall" per scenario
for f in "${scenarios[@]}"; do
  name=$(basename "$f" .sh)
  dir=$ART/$name
  want=$(sed -n '1,40s/^#[[:space:]]*ktest-timeout:[[:space:]]*\([0-9]\+\).*/\1/p' "$f" | head -1)
  want=${want:-300}
  left=$(( BUDGET - (SECONDS - START) ))
  if [ "$left" -lt 60 ]; then
    mkdir -p "$dir"
    echo "KTEST FAIL $name.harness not run: total budget ${BUDGET}s exhausted" > "$dir/results.log"
    status+=("$name|NOT RUN|0")
    continue
  fi
  [ "$want" -gt "$left" ] && want=$left
  echo
  echo "[kernel-tests] ===== $name (timeout ${want}s) ====="
  t0=$SECONDS
  node "$HERE/run-guest.mjs" "$f" "$want" --artifacts "$dir"
  rc=$?
  if [ $rc != 0 ] && ! grep -q '^KTEST FAIL' "$dir/results.log" 2>/dev/null; then
    # the runner itself failed before the guest could report (bad setup, qemu missing, ...)
    echo "KTEST FAIL $name.harness run-guest.mjs exited $rc" >> "$dir/results.log"
  fi
  status+=("$name|$([ $rc = 0 ] && echo OK || echo FAILED)|$((SECONDS - t0))")
done

# ------------------------------------------------------------------------------------------ summary
passed=0 failed=0
echo
echo "[kernel-tests] ===== summary ====="
for s in "${status[@]}"; do
  IFS='|' read -r name st wall <<< "$s"
  r=$ART/$name/results.log
  p=$(grep -c '^KTEST PASS' "$r" 2>/dev/null); f=$(grep -c '^KTEST FAIL' "$r" 2>/dev/null)
  p=${p:-0} f=${f:-0}
  passed=$((passed + p)) failed=$((failed + f))
  printf '  %-28s %-8s %4s passed %4s failed %5ss   %s\n' "$name" "$st" "$p" "$f" "$wall" "$ART/$name/"
  grep '^KTEST FAIL' "$r" 2>/dev/null | sed 's/^KTEST FAIL /      FAIL /'
done
echo
echo "[kernel-tests] ===== metrics ====="
printf '  %-24s %-36s %12s  %s\n' scenario metric value unit
for s in "${status[@]}"; do
  name=${s%%|*}
  awk -v n="$name" '$1 == "KTEST" && $2 == "METRIC" { printf "  %-24s %-36s %12s  %s\n", n, $3, $4, $5 }' \
    "$ART/$name/results.log" 2>/dev/null
done
echo
echo "[kernel-tests] total wall $((SECONDS - START)) s"
finish "$passed" "$failed"
