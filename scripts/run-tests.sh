#!/usr/bin/env bash
# Run the whole ava suite and end with one line "N passed, N failed[, N skipped]".
# In CI (CI=true) integration tests may not skip: a missing component fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then export DR_REQUIRE_INTEGRATION=1; fi
out=$(mktemp)
npx ava --tap "$@" 2>&1 | tee "$out" | grep -vE '^\s*$|^    ---$|^    \.\.\.$'
rc=${PIPESTATUS[0]}   # ava's own status (read right after the pipeline: a later command resets it)
pass=$(awk '/^# pass /{print $3}' "$out" | tail -n1)
fail=$(awk '/^# fail /{print $3}' "$out" | tail -n1)
skip=$(awk '/^# skip /{print $3}' "$out" | tail -n1)
# No summary: ava stopped before the end (a crash, or its reporter failing on a timeout). Count
# the TAP lines it did print, and the run as failed.
if [ -z "$pass" ]; then
  pass=$(grep -c '^ok ' "$out"); fail=$(grep -c '^not ok ' "$out")
  echo "ava ended without its summary (exit $rc): the counts below are the tests it reported"
  [ "$rc" = 0 ] && rc=1
fi
rm -f "$out"
pass=${pass:-0}; fail=${fail:-0}; skip=${skip:-0}
if [ "$rc" != 0 ] && [ "$fail" = 0 ]; then fail=1; fi   # ava itself failed (e.g. a crashed worker)
if [ "$skip" != 0 ]; then echo "$pass passed, $fail failed, $skip skipped"; else echo "$pass passed, $fail failed"; fi
[ "$fail" = 0 ] && [ "$rc" = 0 ]
