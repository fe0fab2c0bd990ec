#!/usr/bin/env bash
# The runtime matrix: builds smtp.core for every Lua whose headers are
# installed (lua5.1, lua5.2, lua5.3, lua5.4, LuaJIT), checks each build
# exports only luaopen_smtp_core and does not link liblua, then runs the
# busted suite under every interpreter in MATRIX_LUAS (default: lua5.1 and
# luajit; Lua 5.4 is scripts/run-tests.sh's job).
#
# Output: one TAP stream on stdout (numbered, with a closing plan), every
# test tagged with its interpreter, e.g. "ok 12 - [luajit] engine ...".
# Callers sum it with grep -c '^ok' / grep -c '^not ok'. Exit status 1
# when anything failed, and when csrc/, lua/, spec/ or the Makefile
# changed while it ran (builds or specs from two trees are not a result).
#
#   scripts/matrix.sh                          # builds + lua5.1 + luajit
#   MATRIX_LUAS="lua5.4 luajit" scripts/matrix.sh
#   MATRIX_BUILDS="luajit" MATRIX_LUAS=luajit scripts/matrix.sh spec/engine_spec.lua
#
# Each spec file runs in its own busted process: a file that fails to load
# (e.g. 5.3-only syntax under 5.1) is one "not ok" line instead of ending
# the whole run (busted 2.1.1's TAP writer crashes on load errors under
# Lua 5.1).
set -u
cd "$(dirname "$0")/.."

BUILDS=${MATRIX_BUILDS:-"lua5.1 lua5.2 lua5.3 lua5.4 luajit"}
LUAS=${MATRIX_LUAS:-"lua5.1 luajit"}
BUSTED=${BUSTED:-/usr/bin/busted}
LPATH='./lua/?.lua;./lua/?/init.lua;./?.lua'

n=0 failed=0
tap_ok()   { n=$((n + 1)); echo "ok $n - $*"; }
tap_fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
tap_skip() { n=$((n + 1)); echo "ok $n - # SKIP $*"; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# What the builds and the specs are made of: the tracked C sources, Lua
# modules, specs and the Makefile as they are in the work tree. A tree that
# changes while this runs (an edit, a commit or checkout in this work tree)
# gives builds from different sources, or specs that do not match the
# builds: one interpreter then fails what another passes. Such a run is
# reported as failed, not trusted.
tree_stamp() {
  git ls-files -z -- csrc lua spec Makefile 2>/dev/null | xargs -0 cat 2>/dev/null | cksum
}
stamp=$(tree_stamp)
check_stamp() {   # $1: the moment, for the message
  local now
  now=$(tree_stamp)
  if [ "$now" != "$stamp" ]; then
    tap_fail "sources unchanged $1: csrc/, lua/, spec/ or the Makefile changed since the run began; its results mix two trees, run it again"
    stamp=$now
  fi
}

pc_name() {   # pkg-config module for an interpreter name
  case "$1" in
    luajit) echo luajit ;;
    *) echo "$1" ;;
  esac
}

# ---- builds ----------------------------------------------------------------
for l in $BUILDS; do
  pc=$(pc_name "$l")
  if ! pkg-config --exists "$pc" 2>/dev/null; then
    tap_skip "build $l: no headers (pkg-config $pc)"
    continue
  fi
  so=build/$l/smtp/core.so
  if make -s LUA="$l" LUA_PC="$pc" > "$log" 2>&1 && [ -f "$so" ]; then
    tap_ok "build $l ($(pkg-config --cflags "$pc" | xargs))"
  else
    tap_fail "build $l"
    sed 's/^/# /' "$log" | head -40
    continue
  fi
  exports=$(nm -D --defined-only "$so" 2>/dev/null | awk '$2 ~ /^[TtDdBbRrVvWwiu]$/ {print $3}' | sort -u | xargs)
  if [ "$exports" = "luaopen_smtp_core" ]; then
    tap_ok "exports $l: only luaopen_smtp_core"
  else
    tap_fail "exports $l: expected only luaopen_smtp_core, got: $exports"
  fi
  needed=$(readelf -d "$so" 2>/dev/null | awk '/NEEDED/ {print $NF}' | tr -d '[]' | xargs)
  if echo "$needed" | grep -qiE 'lua'; then
    tap_fail "links $l: must not link liblua (NEEDED: $needed)"
  else
    tap_ok "links $l: no liblua (NEEDED: ${needed:-none})"
  fi
done

check_stamp "during the builds"

# ---- specs -----------------------------------------------------------------
if [ $# -gt 0 ]; then
  specs=("$@")
else
  specs=(spec/*_spec.lua)
fi

for l in $LUAS; do
  if ! command -v "$l" > /dev/null 2>&1; then
    tap_skip "specs under $l: interpreter not installed"
    continue
  fi
  if [ ! -f "build/$l/smtp/core.so" ]; then
    tap_fail "specs under $l: build/$l/smtp/core.so is missing"
    continue
  fi
  for f in "${specs[@]}"; do
    timeout 900 "$l" "$BUSTED" -o TAP --lpath="$LPATH" --cpath="./build/$l/?.so" "$f" > "$log" 2>&1
    rc=$?
    oks=$(grep -cE '^(not )?ok ' "$log")
    # Renumber busted's lines into this stream and tag them; keep its
    # diagnostics ("# ...") as they are.
    while IFS= read -r line; do
      case "$line" in
        "not ok "*)
          desc=${line#not ok }; desc=${desc#* }; desc=${desc#- }
          tap_fail "[$l] $desc" ;;
        "ok "*)
          desc=${line#ok }; desc=${desc#* }; desc=${desc#- }
          case "$desc" in
            "# SKIP"*) tap_skip "[$l] ${desc#\# SKIP }" ;;
            *) tap_ok "[$l] $desc" ;;
          esac ;;
        "#"*) echo "$line" ;;
      esac
    done < "$log"
    if ! grep -qE '^1\.\.[0-9]+' "$log"; then
      # busted died (load error, crash, timeout) before its plan line
      first=$(grep -vE '^(ok |not ok |#|1\.\.)' "$log" | grep -m1 -E '\S' || true)
      if ! grep -qE '^not ok ' "$log"; then
        tap_fail "[$l] $f: busted exited $rc after $oks tests: ${first:-no output}"
      fi
      # The TAP writer may itself be what crashed: ask the plain one why.
      timeout 900 "$l" "$BUSTED" -o plainTerminal --lpath="$LPATH" --cpath="./build/$l/?.so" "$f" 2>&1 \
        | grep -E 'Error|error|rror ->|\.lua:[0-9]+:' | head -10 | sed 's/^/# /'
    elif [ "$rc" -ne 0 ] && ! grep -qE '^not ok ' "$log"; then
      tap_fail "[$l] $f: busted exited $rc without a failing test"
      grep -vE '^(ok |not ok )' "$log" | tail -15 | sed 's/^/# /'
    fi
  done
done

check_stamp "during the specs"

echo "1..$n"
[ "$failed" -eq 0 ]
