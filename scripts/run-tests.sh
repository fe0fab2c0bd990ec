#!/usr/bin/env bash
# make test: runs every test tier this machine can run and ends with one
# line "N passed, N failed" summed from the runners' own TAP results.
#   C units (ASan+UBSan) | busted under Lua 5.4 | the runtime matrix
#   (Lua 5.1, LuaJIT builds and specs) | LuaRocks builds | luacheck
# Extra tiers for CI (slow): TEST_EXTRA="asan valgrind fuzz".
set -u
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
passed=0 failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

count_tap() {   # ok / not ok lines of the TAP stream in $log
  local ok nok
  ok=$(grep -cE '^ok ' "$log" || true)
  nok=$(grep -cE '^not ok ' "$log" || true)
  passed=$((passed + ok)); failed=$((failed + nok))
  echo "   -> $ok passed, $nok failed"
}

# run_tier NAME COMMAND...: runs a TAP-printing command; a non-zero exit
# with no failing test line counts as one failure (a crash, a build error).
run_tier() {
  local name=$1; shift
  echo "== $name"
  "$@" > "$log" 2>&1
  local rc=$?
  grep -E '^not ok' -A8 "$log" | head -80
  count_tap
  if [ $rc -ne 0 ] && ! grep -qE '^not ok' "$log"; then
    failed=$((failed + 1)); echo "   -> exited $rc without a failing test:"; tail -30 "$log"
  fi
}

run_tier "C units (ASan + UBSan): make check" make -s check
if grep -qE 'AddressSanitizer|runtime error' "$log"; then
  failed=$((failed + 1)); echo "   -> sanitizer report in the C units"
fi
run_tier "Lua specs ($LUA busted)" "$LUA" /usr/bin/busted -o TAP spec
if command -v lua5.1 >/dev/null || command -v luajit >/dev/null; then
  run_tier "runtime matrix (builds, Lua 5.1 and LuaJIT specs)" bash scripts/matrix.sh
fi
if command -v luarocks >/dev/null; then
  run_tier "LuaRocks builds (5.4, 5.1, LuaJIT)" bash scripts/rockspec-check.sh
fi

echo "== luacheck"
if luacheck -q lua spec bin examples bench scripts load > "$log" 2>&1; then
  passed=$((passed + 1)); echo "   -> clean"
else
  failed=$((failed + 1)); cat "$log"
fi

for extra in ${TEST_EXTRA:-}; do
  case $extra in
    asan) run_tier "whole suite with the ASan/UBSan module" bash scripts/asan.sh ;;
    valgrind) run_tier "specs under valgrind memcheck" bash scripts/valgrind.sh ;;
    fuzz) run_tier "libFuzzer targets, ${FUZZ_SECONDS:-60} s each" bash fuzz/run.sh "${FUZZ_SECONDS:-60}" ;;
  esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
