#!/usr/bin/env bash
# Runs every test tier this machine can run and ends with one line
# "N passed, N failed" summed from the runners' own results.
set -u
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
passed=0 failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

count_tap() {   # ok / not ok lines of a TAP stream in $log
  local ok nok
  ok=$(grep -cE '^ok ' "$log" || true)
  nok=$(grep -cE '^not ok ' "$log" || true)
  passed=$((passed + ok)); failed=$((failed + nok))
  echo "   -> $ok passed, $nok failed"
}

echo "== C units (ASan + UBSan): make check"
if make -s check > "$log" 2>&1; then :; else echo "   make check exited non-zero"; fi
grep -E '^not ok|ERROR|runtime error' "$log" | head -20
count_tap
# A test binary that crashed prints no TAP for the rest: count it as a failure.
if grep -qE 'AddressSanitizer|runtime error|make: \*\*\*' "$log"; then
  failed=$((failed + 1)); echo "   -> a C test crashed or failed to build"; tail -30 "$log"
fi

echo "== Lua specs ($LUA busted)"
"$LUA" /usr/bin/busted -o TAP spec > "$log" 2>&1
rc=$?
grep -E '^not ok' -A8 "$log" | head -80
count_tap
if [ $rc -ne 0 ] && ! grep -qE '^not ok' "$log"; then
  failed=$((failed + 1)); echo "   -> busted exited $rc without a failing test:"; tail -30 "$log"
fi

echo "== luacheck"
if luacheck -q lua spec bin examples > "$log" 2>&1; then
  passed=$((passed + 1)); echo "   -> clean"
else
  failed=$((failed + 1)); cat "$log"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
