#!/usr/bin/env bash
# Checks rockspec/lua-smtp-scm-1.rockspec and the release rockspec
# (rockspec/lua-smtp-VERSION-1.rockspec) end to end, offline:
#   1. luarocks lint (both)
#   2. the rockspec names every lua/**/*.lua and csrc/*.c file (and no
#      missing one), and the bin/ scripts it installs exist
#   3. luarocks make into a fresh tree for Lua 5.4, Lua 5.1 and LuaJIT
#      (--lua-version=5.1 with LuaJIT's headers), from a copy of the
#      checkout so no build products land in it
#   4. each build exports luaopen_smtp_core and does not link liblua
#   5. with LUA_PATH/LUA_CPATH set to that tree only (no default paths,
#      run from /), require "smtp" resolves into the tree and sends a
#      message to bin/smtp-debug-server; the installed smtp-send runs, and
#      its manual (man/smtp-send.1) is in the rock's directory
#   6. the release source rock (scripts/release-rock.sh) installs offline
#      into a fresh Lua 5.4 tree and sends; smtp._VERSION and the C core's
#      version are the rock's
# Output: TAP lines ("ok N - ...", "not ok N - ...") and a plan; exit 1
# when anything failed. LUAS="5.4 5.1 luajit" picks the targets.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROCKSPEC=rockspec/lua-smtp-scm-1.rockspec
RELEASE=$(ls rockspec/lua-smtp-[0-9]*.rockspec 2>/dev/null | sort -V | tail -1)
TARGETS=${LUAS:-"5.4 5.1 luajit"}

n=0 failed=0
tap_ok()   { n=$((n + 1)); echo "ok $n - $*"; }
tap_fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
tap_skip() { n=$((n + 1)); echo "ok $n - # SKIP $*"; }
diag()     { sed 's/^/# /'; }

WORK=$(mktemp -d)
DBG_PID=
cleanup() {
  if [ -n "$DBG_PID" ]; then kill "$DBG_PID" 2>/dev/null; wait "$DBG_PID" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v luarocks > /dev/null 2>&1; then
  tap_fail "luarocks is not installed (apt-get install luarocks)"
  echo "1..$n"; exit 1
fi

# ---- 1. lint -------------------------------------------------------------------
for spec in "$ROCKSPEC" $RELEASE; do
  if luarocks lint "$spec" > "$WORK/lint.log" 2>&1; then
    tap_ok "luarocks lint $spec"
  else
    tap_fail "luarocks lint $spec"; diag < "$WORK/lint.log"
  fi
done
[ -n "$RELEASE" ] || tap_fail "no release rockspec (rockspec/lua-smtp-VERSION-1.rockspec)"

# ---- 2. the file lists match the tree ------------------------------------------
present=$( { find lua -name '*.lua'; ls csrc/*.c; ls bin/smtp-send bin/smtp-debug-server 2>/dev/null; } | sort)
for spec in "$ROCKSPEC" $RELEASE; do
  listed=$(lua5.4 - "$spec" <<'EOF' 2>&1
local env = {}
local chunk = assert(loadfile(arg[1], "t", env))
chunk()
local out = {}
for _, m in pairs(env.build.modules) do
  if type(m) == "string" then out[#out + 1] = m
  else for _, s in ipairs(m.sources) do out[#out + 1] = s end end
end
for _, f in pairs((env.build.install or {}).bin or {}) do out[#out + 1] = f end
table.sort(out)
print(table.concat(out, "\n"))
EOF
)
  missing=$(comm -13 <(echo "$listed") <(echo "$present") | xargs)
  extra=$(comm -23 <(echo "$listed") <(echo "$present") | xargs)
  if [ -z "$missing" ]; then
    tap_ok "$spec names every module, C source and bin script"
  else
    tap_fail "$spec does not name: $missing"
  fi
  if [ -z "$extra" ]; then
    tap_ok "every file $spec names exists"
  else
    tap_fail "$spec names files that do not exist: $extra"
  fi
done

# ---- the debug server that the installed trees send to -------------------------
lua5.4 bin/smtp-debug-server --port 0 > "$WORK/dbg.out" 2> "$WORK/dbg.err" &
DBG_PID=$!
DBG_PORT=
for _ in $(seq 100); do
  DBG_PORT=$(sed -n 's/^listening on [^:]*:\([0-9]*\)$/\1/p' "$WORK/dbg.out")
  [ -n "$DBG_PORT" ] && break
  sleep 0.05
done
[ -n "$DBG_PORT" ] || { echo "# smtp-debug-server did not start:"; diag < "$WORK/dbg.err"; }

# send_from_tree NAME INTERP TREE LUAVER: with LUA_PATH/LUA_CPATH set to
# TREE only (run from /), require "smtp" and send to the debug server.
send_from_tree() {
  local target=$1 interp=$2 tree=$3 ver=$4
  local subject="rock $target $$" out rc got
  if [ -z "$DBG_PORT" ]; then
    tap_fail "$target: send through the installed tree (no debug server)"
    return
  fi
  out=$(cd / && env -i PATH="$PATH" HOME="$WORK" \
        LUA_PATH="$tree/share/lua/$ver/?.lua;$tree/share/lua/$ver/?/init.lua" \
        LUA_CPATH="$tree/lib/lua/$ver/?.so" \
        "$interp" - "$DBG_PORT" "$subject" "$tree" <<'EOF' 2>&1
local port, subject, tree = tonumber(arg[1]), arg[2], arg[3]
local smtp = require "smtp"
-- the library and the C module came from the tree, nowhere else
for _, name in ipairs({ "smtp", "smtp.session" }) do
  local path = package.searchpath and package.searchpath(name, package.path)
  if path then assert(path:sub(1, #tree) == tree, name .. " from " .. path) end
end
assert(package.loaded["smtp.core"], "smtp.core not loaded")
local res, err = smtp.send{
  host = "127.0.0.1", port = port, helo = "rock.test",
  from = "rock@example.com", to = "check@example.org",
  subject = subject, text = "Sent from the installed rock.\n",
}
assert(res, err)
print("sent " .. res.code .. " " .. smtp._VERSION .. " on " .. _VERSION ..
  (rawget(_G, "jit") and (" " .. jit.version) or ""))
EOF
)
  rc=$?
  got=
  for _ in $(seq 50); do
    grep -q "^Subject: $subject\$" "$WORK/dbg.out" && { got=1; break; }
    sleep 0.05
  done
  if [ $rc -eq 0 ] && [ -n "$got" ]; then
    tap_ok "$target: require \"smtp\" from the tree only and send to the debug server ($out)"
  else
    tap_fail "$target: require \"smtp\" from the tree only and send to the debug server"
    echo "$out" | diag
  fi

}

# check_manual NAME TREE LUAVER: smtp-send(1) is in the rock's directory
# (copy_directories), the same file as man/smtp-send.1.
check_manual() {
  local target=$1 tree=$2 ver=$3 page
  page=$(ls "$tree"/lib/luarocks/rocks-"$ver"/lua-smtp/*/man/smtp-send.1 2>/dev/null | head -1)
  if [ -n "$page" ] && cmp -s "$page" man/smtp-send.1; then
    tap_ok "$target: the manual is installed (${page#"$tree"/})"
  else
    tap_fail "$target: no man/smtp-send.1 in the rock's directory under $tree"
  fi
}

# ---- 3-5. per target -----------------------------------------------------------
for target in $TARGETS; do
  case "$target" in
    luajit) ver=5.1 interp=luajit extra=("LUA_INCDIR=$(pkg-config --variable=includedir luajit 2>/dev/null || echo /usr/include/luajit-2.1)") ;;
    *) ver=$target interp=lua$target extra=() ;;
  esac
  if ! command -v "$interp" > /dev/null 2>&1; then
    tap_skip "$target: $interp is not installed"
    continue
  fi
  if [ "$target" = luajit ] && [ ! -f "${extra[0]#LUA_INCDIR=}/lua.h" ]; then
    tap_skip "luajit: no LuaJIT headers (apt-get install libluajit2-5.1-dev)"
    continue
  fi
  src="$WORK/src-$target" tree="$WORK/tree-$target"
  mkdir -p "$src"
  cp -r csrc lua bin man docs rockspec "$src"/
  rm -rf "$src/csrc/test"
  if (cd "$src" && luarocks --lua-version="$ver" --tree="$tree" make "$ROCKSPEC" "${extra[@]}") \
      > "$WORK/make-$target.log" 2>&1; then
    tap_ok "$target: luarocks --lua-version=$ver make${extra[*]:+ ${extra[*]}} (offline, fresh tree)"
  else
    tap_fail "$target: luarocks --lua-version=$ver make ${extra[*]}"
    tail -25 "$WORK/make-$target.log" | diag
    continue
  fi

  so="$tree/lib/lua/$ver/smtp/core.so"
  if nm -D --defined-only "$so" 2>/dev/null | grep -qE ' T luaopen_smtp_core$' &&
     ! readelf -d "$so" | grep NEEDED | grep -qi lua; then
    tap_ok "$target: core.so exports luaopen_smtp_core, no liblua ($(readelf -d "$so" | awk '/NEEDED/ {print $NF}' | tr -d '[]' | xargs))"
  else
    tap_fail "$target: core.so exports/links"
    nm -D --defined-only "$so" 2>&1 | grep luaopen | diag
  fi

  if [ -z "$DBG_PORT" ]; then
    tap_fail "$target: send through the installed tree (no debug server)"
    continue
  fi
  send_from_tree "$target" "$interp" "$tree" "$ver"

  if env -i PATH="$PATH" HOME="$WORK" "$tree/bin/smtp-send" --help > "$WORK/help.out" 2>&1 &&
     grep -q '^usage: smtp-send' "$WORK/help.out"; then
    tap_ok "$target: installed bin/smtp-send --help"
  else
    tap_fail "$target: installed bin/smtp-send --help"
    head -10 "$WORK/help.out" | diag
  fi

  check_manual "$target" "$tree" "$ver"
done

# ---- 6. the release source rock ------------------------------------------------
if [ -n "$RELEASE" ] && command -v lua5.4 > /dev/null 2>&1; then
  rockver=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$RELEASE")
  if rock=$(bash scripts/release-rock.sh "$WORK/rock" 2> "$WORK/pack.log") &&
     (cd / && luarocks --lua-version=5.4 --tree="$WORK/tree-rock" install "$rock") > "$WORK/rock.log" 2>&1; then
    tap_ok "release: $(basename "$rock") installs offline into a fresh 5.4 tree"
    send_from_tree "release-$rockver" lua5.4 "$WORK/tree-rock" 5.4
    check_manual "release-$rockver" "$WORK/tree-rock" 5.4
    got=$(cd / && LUA_PATH="$WORK/tree-rock/share/lua/5.4/?.lua" LUA_CPATH="$WORK/tree-rock/lib/lua/5.4/?.so" \
          lua5.4 -e 'local s = require "smtp"; print(s._VERSION .. " / " .. require("smtp.core").version)' 2>&1)
    if [ "$got" = "lua-smtp ${rockver%-*} / ${rockver%-*}" ]; then
      tap_ok "release: smtp._VERSION and the core's version are the rock's ($got)"
    else
      tap_fail "release: versions '$got' are not the rock's ${rockver%-*}"
    fi
  else
    tap_fail "release: the source rock does not install offline"
    { cat "$WORK/pack.log"; tail -20 "$WORK/rock.log" 2>/dev/null; } | diag
  fi
fi

echo "1..$n"
[ "$failed" -eq 0 ]
