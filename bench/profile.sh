#!/usr/bin/env bash
# Where lua-smtp's time goes on test (a): many 1 KB messages on one
# connection to smtp-sink on 127.0.0.1, client and sink on CPU 0.
#
#   bash bench/profile.sh [COUNT]      (default 2000)
#
# 1. perf stat (software events): CPU time, user/sys, context switches per
#    message, for lua-smtp, smtp-source and smtplib;
# 2. strace -c: system calls per message, for the same three;
# 3. perf record (cpu-clock, user space) on lua-smtp: the hottest symbols;
# 4. callgrind on a short lua-smtp run (COUNT/10 messages): inclusive cost
#    per function (interpreter and core.so).
# Each step is skipped when its tool (linux-perf, strace, valgrind) is
# missing. Everything runs on 127.0.0.1, started and stopped by PID, under
# `timeout`; the whole script stops itself after 300 s.
set -uo pipefail
if [ -z "${PROFILE_INNER:-}" ]; then
  export PROFILE_INNER=1
  exec timeout -k 10 300 bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
export LUA
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
export PATH="$PATH:/usr/sbin"
N=${1:-2000}
SIZE=1024
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lua-smtp-profile.XXXXXX")
SINK_PID=
cleanup() {
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -f "build/$LUA/smtp/core.so" ] || make --no-print-directory LUA="$LUA" >&2 || exit 1

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=(); [ "$(id -u)" = 0 ] && user=(-u nobody)
taskset -c 0 smtp-sink "${user[@]}" "127.0.0.1:$PORT" 4096 > "$WORK/sink.out" 2>&1 &
SINK_PID=$!
for _ in $(seq 200); do ss -Hltn "sport = :$PORT" | grep -q . && break; sleep 0.025; done

LUA_CMD=("$LUA" bench/lua_smtp_client.lua sendmail "$N" "$SIZE" "$PORT")
SRC_CMD=(smtp-source -d -l "$SIZE" -m "$N" -s 1 "127.0.0.1:$PORT")
PY_CMD=("$PY" bench/smtplib_client.py loop "$N" "$SIZE" "$PORT")

echo "== (a) $N x $SIZE B on one connection, client and smtp-sink on CPU 0"
echo "nproc: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"

if command -v perf >/dev/null 2>&1; then
  echo
  echo "== perf stat (software events), per message"
  printf '%-12s %10s %10s %10s %10s %12s\n' client "task us" "user us" "sys us" "wall us" "ctx-sw"
  for name in lua-smtp smtp-source smtplib; do
    case $name in
      lua-smtp) cmd=("${LUA_CMD[@]}");;
      smtp-source) cmd=("${SRC_CMD[@]}");;
      smtplib) cmd=("${PY_CMD[@]}");;
    esac
    timeout 120 perf stat -x, -o "$WORK/stat" -e task-clock,context-switches \
      taskset -c 0 "${cmd[@]}" > /dev/null 2>&1 < /dev/null
    awk -F, -v n="$N" -v name="$name" '
      /task-clock/ { task = $1 }
      /context-switches/ { cs = $1 }
      /seconds time elapsed/ { wall = $1 }
      /seconds user/ { user = $1 }
      /seconds sys/ { sys = $1 }
      END { printf "%-12s %10.1f %10.1f %10.1f %10.1f %12.2f\n", name, task * 1000 / n,
            user * 1e6 / n, sys * 1e6 / n, wall * 1e6 / n, cs / n }' "$WORK/stat"
  done
fi

if command -v strace >/dev/null 2>&1; then
  echo
  echo "== system calls per message (strace -c; the client only)"
  for name in lua-smtp smtp-source smtplib; do
    case $name in
      lua-smtp) cmd=("${LUA_CMD[@]}");;
      smtp-source) cmd=("${SRC_CMD[@]}");;
      smtplib) cmd=("${PY_CMD[@]}");;
    esac
    timeout 120 strace -f -c -o "$WORK/strace" taskset -c 0 "${cmd[@]}" > /dev/null 2>&1 < /dev/null
    printf '%-12s' "$name"
    awk -v n="$N" '$NF ~ /^[a-z_0-9]+$/ && $(NF-1) ~ /^[0-9]+$/ || ($NF ~ /^[a-z_0-9]+$/ && $(NF-2) ~ /^[0-9]+$/) {
        calls = ($(NF-1) ~ /^[0-9]+$/ && $(NF-2) ~ /^[0-9]+$/) ? $(NF-2) : $(NF-1)
        if (calls / n >= 0.5) printf " %s=%.2f", $NF, calls / n
      }
      / total$/ { total = $(NF-2) ~ /^[0-9]+$/ ? $(NF-2) : $(NF-1) }
      END { printf "  | total %.2f\n", total / n }' "$WORK/strace"
  done
fi

if command -v perf >/dev/null 2>&1; then
  echo
  echo "== perf record -e cpu-clock (user space) on lua-smtp: top symbols"
  if timeout 120 perf record -q -e cpu-clock:u -F 5000 -o "$WORK/perf.data" \
       taskset -c 0 "${LUA_CMD[@]}" > /dev/null 2>&1 < /dev/null; then
    perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -n 30
  else
    echo "(perf record failed)"
  fi
fi

if command -v valgrind >/dev/null 2>&1; then
  M=$((N / 10))
  echo
  echo "== callgrind, lua-smtp, $M messages: inclusive instructions per function (top 30)"
  timeout 240 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    "$LUA" bench/lua_smtp_client.lua sendmail "$M" "$SIZE" "$PORT" > /dev/null 2>&1 < /dev/null
  if [ -f "$WORK/cg.out" ]; then
    callgrind_annotate --inclusive=yes "$WORK/cg.out" 2>/dev/null | sed -n '1,60p' \
      | grep -E '^ *[0-9,]+ ' | head -n 30
    echo "-- exclusive (self) cost, top 25"
    callgrind_annotate "$WORK/cg.out" 2>/dev/null | grep -E '^ *[0-9,]+ ' | head -n 25
  fi
fi
