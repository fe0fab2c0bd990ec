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
cd "$(dirname "$0")/.." || exit 1
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

pick() {
  case $1 in
    lua-smtp) CMD=("${LUA_CMD[@]}");;
    smtp-source) CMD=("${SRC_CMD[@]}");;
    smtplib) CMD=("${PY_CMD[@]}");;
  esac
}

if command -v perf >/dev/null 2>&1; then
  echo
  echo "== perf stat (software events): client CPU per message (process start-up included)"
  printf '%-12s %9s %9s %9s %9s %9s\n' client "task us" "user us" "sys us" "wall us" "ctx-sw"
  for name in lua-smtp smtp-source smtplib; do
    pick "$name"
    timeout 120 perf stat -o "$WORK/stat" -e task-clock,context-switches \
      taskset -c 0 "${CMD[@]}" > /dev/null 2>&1 < /dev/null
    awk -v n="$N" -v name="$name" '
      $2 == "msec" && $3 == "task-clock" { task = $1 }
      $2 == "context-switches" { cs = $1 }
      $2 == "seconds" && $3 == "time" { wall = $1 }
      $2 == "seconds" && $3 == "user" { user = $1 }
      $2 == "seconds" && $3 == "sys" { sys = $1 }
      END { gsub(",", "", task); gsub(",", "", cs)
            printf "%-12s %9.1f %9.1f %9.1f %9.1f %9.2f\n", name, task * 1000 / n,
            user * 1e6 / n, sys * 1e6 / n, wall * 1e6 / n, cs / n }' "$WORK/stat"
  done
fi

if command -v strace >/dev/null 2>&1; then
  echo
  echo "== system calls per message (strace -c -f, the client process only; >= 0.5 per message)"
  for name in lua-smtp smtp-source smtplib; do
    pick "$name"
    timeout 120 strace -f -c -o "$WORK/strace" taskset -c 0 "${CMD[@]}" > /dev/null 2>&1 < /dev/null
    "$PY" - "$WORK/strace" "$N" "$name" <<'PYEOF'
import sys
path, n, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls, total = [], 0
for line in open(path):
    t = line.split()
    if len(t) < 5 or not t[0][0].isdigit():
        continue
    if t[-1] == "total":
        total = int(t[3])
        continue
    calls.append((int(t[3]), t[-1]))
calls.sort(reverse=True)
top = " ".join("%s=%.2f" % (sc, c / n) for c, sc in calls if c / n >= 0.5)
print("%-12s total %6.2f/msg: %s" % (name, total / n, top))
PYEOF
  done
fi

if command -v perf >/dev/null 2>&1; then
  echo
  echo "== perf record -e cpu-clock:u on lua-smtp ($N messages): user-space samples by object, then by symbol"
  if timeout 120 perf record -q -e cpu-clock:u -F 10000 -o "$WORK/perf.data" \
       taskset -c 0 "${LUA_CMD[@]}" > /dev/null 2>&1 < /dev/null; then
    perf report -i "$WORK/perf.data" --no-children --sort dso --stdio 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -n 8
    echo "--"
    perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | grep -v 'lua5.4 .*0x0000' | head -n 20
    echo "(lua5.4 is stripped: its samples are the interpreter itself, counted in the first list)"
  else
    echo "(perf record failed)"
  fi
fi

if command -v valgrind >/dev/null 2>&1; then
  S=$((N / 20)); L=$((N / 5))
  echo
  echo "== callgrind, lua-smtp: instructions per message (slope between $S and $L messages), by object"
  for m in "$S" "$L"; do
    timeout 240 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$m" \
      "$LUA" bench/lua_smtp_client.lua sendmail "$m" "$SIZE" "$PORT" > /dev/null 2>&1 < /dev/null
    callgrind_annotate --threshold=100 "$WORK/cg.$m" 2>/dev/null > "$WORK/cg.$m.txt"
  done
  "$PY" - "$WORK/cg.$S.txt" "$WORK/cg.$L.txt" "$S" "$L" <<'PYEOF'
import re, sys
def load(path):
    objs, funcs = {}, {}
    for line in open(path):
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*?)\s+\[(.*)\]\s*$", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        fn, obj = m.group(2), m.group(3).rsplit("/", 1)[-1]
        objs[obj] = objs.get(obj, 0) + n
        key = fn.rsplit(":", 1)[-1] if not fn.startswith("???") else fn
        funcs[(key, obj)] = funcs.get((key, obj), 0) + n
    return objs, funcs
(o1, f1), (o2, f2) = load(sys.argv[1]), load(sys.argv[2])
d = int(sys.argv[4]) - int(sys.argv[3])
per = {k: (o2.get(k, 0) - o1.get(k, 0)) / d for k in set(o1) | set(o2)}
tot = sum(v for v in per.values() if v > 0)
print("instructions per message: %.0f" % tot)
for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
    if v / tot >= 0.005:
        print("  %6.1f%%  %8.0f  %s" % (100 * v / tot, v, k))
print("-- hottest functions (self, per message):")
perf = {k: (f2.get(k, 0) - f1.get(k, 0)) / d for k in set(f1) | set(f2)}
for (fn, obj), v in sorted(perf.items(), key=lambda kv: -kv[1])[:15]:
    print("  %6.1f%%  %8.0f  %s [%s]" % (100 * v / tot, v, fn, obj))
PYEOF
fi

echo
echo "== Lua VM instruction samples (debug.sethook), lua-smtp, $N messages"
timeout 120 taskset -c 0 "$LUA" bench/lua_hook_profile.lua sendmail "$N" "$SIZE" "$PORT" < /dev/null 2>&1 \
  | grep -v '^RESULT'
