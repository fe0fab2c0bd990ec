#!/usr/bin/env bash
# Runs the busted suite under valgrind memcheck, with the normal module
# (build/lua5.4/smtp/core.so, built by `make` first).
#
#   scripts/valgrind.sh                        # every spec file
#   scripts/valgrind.sh spec/engine_spec.lua   # some of them
#   VALGRIND_SPECS=core scripts/valgrind.sh    # only engine, frame, fault,
#                                              # sink, transcript, tls, auth
#   VALGRIND_CPATH='./build/other/?.so' scripts/valgrind.sh   # another build
#
# Each spec file runs in its own `valgrind lua5.4 busted` process
#   valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite
#            --error-exitcode=99 --trace-children=no --keep-debuginfo=yes
# so a report names its file.  Only the busted process is checked: the
# servers and tools the specs start (smtp-sink, Postfix, nginx, python3,
# lua5.4 running bin/ scripts, ...) run natively (--trace-children=no).
# --keep-debuginfo=yes: lua_close unloads core.so before the leak check, and
# without it core.so's frames in a leak stack print as "???".
#
# Output: one TAP stream on stdout (renumbered, closing plan) with, after
# each file's tests, a line saying whether valgrind reported anything for
# it (memcheck errors anywhere in the process, or "definitely lost" blocks);
# then a summary.  Exit status: 0 clean; 1 a test failed, valgrind clean;
# 2 valgrind reported errors or definite leaks (wins over 1); 3 the build
# failed.  The whole run is bounded by VALGRIND_BUDGET seconds (default 840):
# files that no longer fit are reported as "# SKIP".
set -u
cd "$(dirname "$0")/.." || exit 3

LUA=${LUA:-lua5.4}
BUSTED=${BUSTED:-/usr/bin/busted}
CPATH_MOD=${VALGRIND_CPATH:-./build/$LUA/?.so}
BUDGET=${VALGRIND_BUDGET:-840}
FILE_TIMEOUT=${VALGRIND_FILE_TIMEOUT:-400}
LPATH='./lua/?.lua;./lua/?/init.lua;./?.lua'
VG=(valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite
    --error-exitcode=99 --trace-children=no --keep-debuginfo=yes --num-callers=30
    --suppressions=scripts/valgrind.supp)

n=0 failed=0 vgfail=0
tap_ok()   { n=$((n + 1)); echo "ok $n - $*"; }
tap_fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
tap_skip() { n=$((n + 1)); echo "ok $n - # SKIP $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

if ! command -v valgrind > /dev/null 2>&1; then
  tap_skip "valgrind: not installed"; echo "1..$n"; exit 0
fi

if [ -z "${VALGRIND_CPATH:-}" ]; then
  if make -s LUA="$LUA" > "$tmp/build" 2>&1 && [ -f "build/$LUA/smtp/core.so" ]; then
    tap_ok "valgrind: make LUA=$LUA ($(valgrind --version))"
  else
    tap_fail "valgrind: make LUA=$LUA"; sed 's/^/# /' "$tmp/build" | tail -30
    echo "1..$n"; exit 3
  fi
fi

# The C allocation-failure run (every allocation of its scenarios failed in
# turn) under memcheck too: make check runs it under ASan.
if [ $# -eq 0 ]; then
  if make -s build/valgrind/test_failmalloc > "$tmp/fm" 2>&1; then
    if "${VG[@]}" build/valgrind/test_failmalloc > "$tmp/fm" 2>&1; then
      tap_ok "valgrind: test_failmalloc: $(grep -c '^ok ' "$tmp/fm") scenarios, 0 errors, no definite leak ($(grep '^# failmalloc:' "$tmp/fm" | sed 's/^# failmalloc: //'))"
    else
      tap_fail "valgrind: test_failmalloc"; grep -E '^not ok|ERROR SUMMARY|definitely lost' "$tmp/fm" | sed 's/^/# /' | head -20
    fi
  else
    tap_fail "valgrind: building test_failmalloc"; sed 's/^/# /' "$tmp/fm" | tail -20
  fi
fi

if [ $# -gt 0 ]; then
  specs=("$@")
elif [ "${VALGRIND_SPECS:-all}" = core ]; then
  specs=(spec/engine_spec.lua spec/frame_spec.lua spec/fault_spec.lua spec/sink_spec.lua
         spec/transcript_spec.lua spec/tls_spec.lua spec/auth_spec.lua)
else
  specs=(spec/*_spec.lua)
fi

reports=()
for f in "${specs[@]}"; do
  [ -f "$f" ] || { tap_fail "valgrind: $f: no such file"; continue; }
  left=$(( BUDGET - ($(date +%s) - start) ))
  if [ "$left" -lt 30 ]; then
    tap_skip "valgrind: $f: over the ${BUDGET}s budget"
    continue
  fi
  to=$FILE_TIMEOUT; [ "$left" -lt "$to" ] && to=$left
  vlog=$tmp/vg.log; rm -f "$vlog"
  t0=$(date +%s)
  timeout "$to" "${VG[@]}" --log-file="$vlog" "$LUA" "$BUSTED" -o TAP --exclude-tags=timing \
    --lpath="$LPATH" --cpath="$CPATH_MOD" "$f" > "$tmp/tap" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  oks=$(grep -cE '^(not )?ok ' "$tmp/tap")
  while IFS= read -r line; do
    case "$line" in
      "not ok "*) desc=${line#not ok }; desc=${desc#* }; desc=${desc#- }; tap_fail "$desc" ;;
      "ok "*)
        desc=${line#ok }; desc=${desc#* }; desc=${desc#- }
        case "$desc" in
          "# SKIP"*) tap_skip "${desc#\# SKIP }" ;;
          *) tap_ok "$desc" ;;
        esac ;;
      "#"*) echo "$line" ;;
    esac
  done < <(grep -E '^(ok |not ok |#)' "$tmp/tap")

  errs=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$vlog" 2>/dev/null | tail -1 | tr -d ,)
  def=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes in \([0-9,]*\) blocks.*/\1 bytes in \2 blocks/p' "$vlog" 2>/dev/null | tail -1)
  poss=$(sed -n 's/.*possibly lost: \([0-9,]*\) bytes.*/\1/p' "$vlog" 2>/dev/null | tail -1)
  if [ "$rc" -eq 99 ] || [ "${errs:-0}" != 0 ]; then
    vgfail=1
    tap_fail "valgrind: $f: ${errs:-?} errors, definitely lost ${def:-?} (${secs}s)"
    # the reports (without the banner), for the reader
    grep -vE '^==[0-9]+== *$' "$vlog" | sed -n '/Command:/,$p' | grep -vE 'Memcheck,|Copyright|Using Valgrind|Command:|Parent PID' \
      | grep -vE '^==[0-9]+== +(at|by) 0x[0-9A-F]+: \?\?\? \(in /usr/bin/lua5' | head -80 | sed 's/^/# /'
    reports+=("$f: ${errs:-?} errors, definitely lost ${def:-?}")
  elif [ "$rc" -eq 124 ]; then
    tap_fail "valgrind: $f: timed out after ${to}s ($oks tests reported)"
  elif [ ! -s "$vlog" ] || [ -z "$errs" ]; then
    tap_fail "valgrind: $f: no valgrind summary (exit $rc, $oks tests)"
    tail -15 "$tmp/tap" | sed 's/^/# /'
  elif ! grep -qE '^1\.\.[0-9]+' "$tmp/tap"; then
    first=$(grep -vE '^(ok |not ok |#|1\.\.)' "$tmp/tap" | grep -m1 -E '\S' || true)
    tap_fail "valgrind: $f: busted exited $rc after $oks tests: ${first:-no output}"
  else
    tap_ok "valgrind: $f: 0 errors, definitely lost ${def:-0 bytes in 0 blocks}, possibly lost ${poss:-0} bytes ($oks tests, ${secs}s)"
  fi
done

echo "1..$n"
total=$(( $(date +%s) - start ))
echo "# valgrind.sh: $n TAP lines, $failed not ok, valgrind reports: ${#reports[@]}, ${total}s"
for r in "${reports[@]}"; do echo "#   $r"; done
if [ $vgfail = 1 ]; then exit 2; fi
[ "$failed" -eq 0 ] || exit 1
exit 0
