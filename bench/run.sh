#!/usr/bin/env bash
# make bench: lua-smtp side by side with Postfix's smtp-source, Python's
# smtplib, LuaSocket's socket.smtp and curl, against Postfix's smtp-sink on
# 127.0.0.1. Prints a table of medians with ratios and the targets.
#
#   bash bench/run.sh            the whole run (about 4-6 minutes on 2 CPUs)
#   BENCH_QUICK=1 bash bench/run.sh   fewer messages and runs (a smoke test)
#   BENCH_ONLY="a c" bash bench/run.sh   only some tests (a b c d e f g h)
#   BENCH_WINDOW=N               passed to s:send_many(list, { window = N })
#   BENCH_NO_MAKE=1              do not run make first
#   BENCH_FORCE=1                run although the machine is busy (see below)
#
# The load average is checked first: above 0.5 the run warns loudly, above
# 1.0 it refuses (BENCH_FORCE=1 runs anyway and says so in the output).
# Figures taken on a busy machine favour whichever client waits more and
# computes less; they are not comparable with an idle run.
#
# Everything it starts (smtp-sink, the delay proxy, the clients) listens on
# or connects to 127.0.0.1 only, is started and stopped by PID, and runs
# under `timeout`; the whole run stops itself after BENCH_LIMIT seconds
# (default 900).
#
# Needs (Debian): postfix (smtp-sink, smtp-source), curl, python3,
# lua-socket, util-linux (taskset), time (/usr/bin/time), iproute2 (ss),
# and a C compiler; linux-perf is used when present.  (c)'s Postfix part,
# (f) and (g) also need root and dovecot-core (the test harness's Postfix);
# (f) also runs swaks (with libnet-ssleay-perl) when installed.
set -uo pipefail

# ---- a time limit for the whole run ------------------------------------------
if [ -z "${BENCH_INNER:-}" ]; then
  export BENCH_INNER=1
  exec timeout -k 10 "${BENCH_LIMIT:-900}" bash "$0" "$@"
fi

cd "$(dirname "$0")/.." || exit 1
LUA=${LUA:-lua5.4}
export LUA
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi
fi
MODULE="build/$LUA/smtp/core.so"
QUICK=${BENCH_QUICK:-}
ONLY=${BENCH_ONLY:-a b c d e f g h}
WINDOW=${BENCH_WINDOW:-}
TMO=120                  # seconds for any one client run

# Sizes and repetitions (the issue's numbers; BENCH_QUICK shrinks them).
A_N=2000; A_SLOW_N=50; A_REPS=5     # (a) one connection
B_N=200;  B_SLOW_N=50; B_REPS=5     # (b) a connection per message
C_SMALL=5; C_LARGE=55; C_REPS=3     # (c) round trips: slope between two runs
C_DELAY_MS=10
D_MB=50;  D_REPS=5                  # (d) one big message from a file
E_MB=64;  E_REPS=5                  # (e) codec throughput
F_N=200;  F_REPS=3                  # (f) a verified STARTTLS connection per message
G_MB=100                            # (g) peak RSS with an attachment of G_MB MB
H_N=2000; H_MB=20; H_REPS=3        # (h) DKIM: messages and MB of body
SIZE=1024
if [ -n "$QUICK" ]; then
  A_N=300; A_SLOW_N=10; A_REPS=3
  B_N=40;  B_SLOW_N=10; B_REPS=3
  C_SMALL=3; C_LARGE=13; C_REPS=1
  D_MB=8;  D_REPS=1
  E_MB=16; E_REPS=1
  F_N=40;  F_REPS=1
  G_MB=20
  H_N=300; H_MB=4; H_REPS=1
fi

die() { echo "bench: $*" >&2; exit 1; }

# ---- is the machine idle? -------------------------------------------------------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
LOAD1=${LOAD_START%% *}
if awk -v l="$LOAD1" 'BEGIN { exit !(l > 1.0) }'; then
  if [ -z "${BENCH_FORCE:-}" ]; then
    echo "bench: REFUSED: load average $LOAD_START (above 1.0 on $(nproc) CPUs): other work would" >&2
    echo "bench: skew every ratio. Wait for an idle machine, or BENCH_FORCE=1 to run anyway." >&2
    exit 75
  fi
fi
log() { printf "[%3ds] %s\n" "$SECONDS" "$*" >&2; }

CC=${CC:-cc}
for tool in smtp-sink smtp-source curl taskset timeout ss "$PY" "$LUA" "$CC"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || die "missing $tool (see bench/run.sh header for the packages)"
done
[ -x /usr/bin/time ] || die "missing /usr/bin/time (apt-get install time)"
"$LUA" -e 'require "socket.smtp"' 2>/dev/null || die "LuaSocket for $LUA is missing (apt-get install lua-socket)"
export PATH="$PATH:/usr/sbin"
# The module as the sources are now (a no-op when it is up to date).
if [ -z "${BENCH_NO_MAKE:-}" ]; then
  make --no-print-directory LUA="$LUA" >&2 || die "make failed"
fi
[ -f "$MODULE" ] || die "$MODULE is missing: run make"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lua-smtp-bench.XXXXXX")
RAW="$WORK/raw.tsv"
: > "$RAW"
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "bench: interrupted"; exit 130' INT
trap 'log "bench: stopped by the time limit; the table below is partial"; trap - TERM; print_table; exit 124' TERM

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until something listens on 127.0.0.1:$1 while PID $2 lives.
wait_listen() {
  local port=$1 pid=$2
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || return 1
    ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && return 0
    sleep 0.025
  done
  return 1
}

stop_pid() {
  local pid=$1 p keep=()
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# smtp-sink on CPU 0, counting messages on its stdout (-c).
SINK_PID=; SINK_PORT=; SINK_OUT=
start_sink() {
  local _try user=()
  [ "$(id -u)" = 0 ] && user=(-u nobody)
  for _try in 1 2 3; do
    SINK_PORT=$(free_port)
    SINK_OUT="$WORK/sink.$SINK_PORT.out"
    taskset -c 0 smtp-sink -c "${user[@]}" "127.0.0.1:$SINK_PORT" 4096 > "$SINK_OUT" 2>&1 &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_listen "$SINK_PORT" "$SINK_PID" && return 0
    stop_pid "$SINK_PID"
  done
  die "smtp-sink did not start: $(cat "$SINK_OUT")"
}
stop_sink() { stop_pid "$SINK_PID"; SINK_PID=; }

# Messages the sink has taken (the "." count of smtp-sink -c).
sink_count() {
  local n
  n=$(tr '\r' '\n' < "$SINK_OUT" | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2)
  echo "${n:-0}"
}

# The delay proxy on CPU 0 in front of the sink.
PROXY_PID=; PROXY_PORT=
start_proxy() {
  local out="$WORK/proxy.out"
  taskset -c 0 "$PY" bench/delay_proxy.py 0 "$SINK_PORT" "$C_DELAY_MS" 300 > "$out" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  for _ in $(seq 200); do
    PROXY_PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")
    [ -n "$PROXY_PORT" ] && return 0
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.025
  done
  die "the delay proxy did not start: $(cat "$out")"
}
stop_proxy() { stop_pid "$PROXY_PID"; PROXY_PID=; }

now_ns() { date +%s%N; }

# run_client CPU COUNT cmd...: runs one client on CPU, then waits until the
# sink has counted COUNT more messages. Sets RUN_ELAPSED (seconds: the
# client's own RESULT elapsed when it prints one, else wall time), RUN_OK
# (1 when the client exited 0, said ok=COUNT if it reports, and the sink
# counted exactly COUNT), RUN_CPU (user+sys seconds) and RUN_RSS (KB).
RUN_ELAPSED=; RUN_OK=; RUN_CPU=; RUN_RSS=; RUN_NOTE=
run_client() {
  local cpu=$1 count=$2; shift 2
  local before after t0 t1 rc out ok_field
  before=$(sink_count)
  t0=$(now_ns)
  out=$(timeout -k 5 "$TMO" /usr/bin/time -f "%e %U %S %M" -o "$WORK/time.out" \
        taskset -c "$cpu" "$@" < /dev/null 2> "$WORK/client.err")
  rc=$?
  t1=$(now_ns)
  RUN_ELAPSED=$(printf '%s\n' "$out" | sed -n 's/^RESULT .* elapsed=\([0-9.]*\).*/\1/p' | tail -n 1)
  [ -n "$RUN_ELAPSED" ] || RUN_ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e9 }')
  read -r _ u s m < "$WORK/time.out" 2>/dev/null || { u=0; s=0; m=0; }
  RUN_CPU=$(awk -v u="${u:-0}" -v s="${s:-0}" 'BEGIN { printf "%.3f", u + s }')
  RUN_RSS=${m:-0}
  ok_field=$(printf '%s\n' "$out" | sed -n 's/^RESULT .* ok=\([0-9]*\).*/\1/p' | tail -n 1)
  for _ in $(seq 200); do
    after=$(sink_count)
    [ "$after" -ge $((before + count)) ] && break
    sleep 0.025
  done
  RUN_OK=1; RUN_NOTE=
  if [ "$rc" != 0 ]; then RUN_OK=0; RUN_NOTE="exit $rc"; fi
  if [ -n "$ok_field" ] && [ "$ok_field" != "$count" ]; then RUN_OK=0; RUN_NOTE="$RUN_NOTE client ok=$ok_field"; fi
  if [ $((after - before)) != "$count" ]; then RUN_OK=0; RUN_NOTE="$RUN_NOTE sink took $((after - before))"; fi
  if [ "$RUN_OK" != 1 ]; then
    log "  FAILED ($RUN_NOTE, want $count): $*"
    head -n 5 "$WORK/client.err" | sed 's/^/    /' >&2
  fi
}

# record TEST PLACEMENT CLIENT VALUE UNIT [RATIO]
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-}" >> "$RAW"
}

# The table of what has been measured so far (also when the time limit
# stops the run early).
print_table() {
  echo
  "$PY" bench/report.py "$RAW" \
    "a: $A_N msgs of $SIZE B on one connection (luasocket default: $A_SLOW_N msgs; Nagle costs it ~40 ms a message)" \
    "b: $B_N msgs of $SIZE B, one connection each" \
    "c: round trips per message via a ${C_DELAY_MS} ms server->client delay (slope between $C_SMALL and $C_LARGE msgs)" \
    "d: one $D_MB MB message from a file; wall s, CPU s (user+sys) and peak RSS MB, process start-up included" \
    "e: $E_MB MB of text in 64 KB chunks; MB/s of input; ratio to memcpy of the same chunks" \
    "f: $F_N msgs of $SIZE B, each over a new STARTTLS connection verified for 127.0.0.1, to a private Postfix (discard transport); msg/s by wall time with process start-up; f-cpu client CPU ms/msg; f-srv Postfix+Dovecot CPU ms/msg (bench/tls_bench.lua)" \
    "g: peak RSS MB of one lua5.4 process sending a $G_MB MB attachment to a private Postfix (bench/rss.sh); target < 16 MB on every path" \
    "h: DKIM signing cost, client CPU on CPU 1 (bench/dkim.lua): us per composed 1 KB message and ms per MB of a raw message's body, the message produced whole each time, unsigned beside each algorithm (RSA 2048 bits)" \
    "${G_NOTE[@]}"
  echo "load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg); nproc: $(nproc)${BENCH_FORCE:+; BENCH_FORCE=1: run although busy}"
}

G_NOTE=()   # (g)'s verdict, for the notes under the table (report.py has no target for g)

placement_cpu() { [ "$1" = same ] && echo 0 || echo 1; }

LUA_CLIENT=("$LUA" bench/lua_smtp_client.lua)
PY_CLIENT=("$PY" bench/smtplib_client.py)
LS_CLIENT=("$LUA" bench/luasocket_client.lua)

echo "== lua-smtp benchmarks ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo "nproc: $(nproc)"
echo "load average at start: $LOAD_START"
if awk -v l="$LOAD1" 'BEGIN { exit !(l > 0.5) }'; then
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "!! WARNING: the machine is NOT idle (load $LOAD1 > 0.5 on $(nproc) CPUs)."
  echo "!! These figures are not comparable with an idle run; do not quote them as such."
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
fi
echo "versions: $("$LUA" -v 2>&1 | head -n 1); $("$PY" --version 2>&1); $(curl --version | head -n 1 | cut -d' ' -f1-2); postfix $(dpkg-query -W -f='${Version}' postfix 2>/dev/null || echo '?')"
echo "placements (taskset): same = client, sink and proxy on CPU 0; cross = client on CPU 1, sink and proxy on CPU 0;"
echo "  postfix = (c)'s private Postfix, not pinned, client not pinned; tls = (f): client on CPU 1, every Postfix/Dovecot process on CPU 0"
echo "repetitions: a $A_REPS, b $B_REPS, c $C_REPS, d $D_REPS, e $E_REPS, f $F_REPS, h $H_REPS (the runs column counts them); in every"
echo "  repetition each client runs once, in turn (smtp-source, then lua-smtp, ...), so all see the same conditions"
[ -n "$QUICK" ] && echo "BENCH_QUICK: reduced counts, not the issue's numbers"
echo

want() { case " $ONLY " in *" $1 "*) return 0;; esac; return 1; }

# ---- (a) many messages on one connection --------------------------------------
if want a; then
  for placement in same cross; do
    cpu=$(placement_cpu "$placement")
    log "(a) $A_N x ${SIZE} B on one connection, $placement: $A_REPS runs"
    start_sink
    for _ in $(seq "$A_REPS"); do
      # name|count|command
      while IFS='|' read -r name count cmd; do
        # shellcheck disable=SC2086
        run_client "$cpu" "$count" $cmd
        if [ "$RUN_OK" = 1 ]; then
          record a "$placement" "$name" "$(awk -v n="$count" -v t="$RUN_ELAPSED" 'BEGIN { printf "%.1f", n / t }')" msg/s
          # Client CPU (user + sys, start-up included) from /usr/bin/time, whose
          # 10 ms resolution makes it meaningless for short runs.
          [ "$count" -ge 1000 ] && record a-cpu "$placement" "$name" \
            "$(awk -v n="$count" -v c="$RUN_CPU" 'BEGIN { printf "%.1f", c * 1e6 / n }')" "us/msg"
        else
          record a "$placement" "$name" FAIL msg/s
        fi
      done <<EOF
smtp-source|$A_N|smtp-source -d -l $SIZE -m $A_N -s 1 127.0.0.1:$SINK_PORT
lua-smtp sendmail|$A_N|${LUA_CLIENT[*]} sendmail $A_N $SIZE $SINK_PORT
lua-smtp send_many|$A_N|${LUA_CLIENT[*]} send_many $A_N $SIZE $SINK_PORT $WINDOW
smtplib|$A_N|${PY_CLIENT[*]} loop $A_N $SIZE $SINK_PORT
luasocket+nodelay|$A_N|${LS_CLIENT[*]} loop $A_N $SIZE $SINK_PORT nodelay
luasocket ($A_SLOW_N msgs)|$A_SLOW_N|${LS_CLIENT[*]} loop $A_SLOW_N $SIZE $SINK_PORT
EOF
    done
    stop_sink
  done
fi

# ---- (b) a new connection for every message ------------------------------------
if want b; then
  for placement in same cross; do
    cpu=$(placement_cpu "$placement")
    log "(b) $B_N x ${SIZE} B, a connection each, $placement: $B_REPS runs"
    start_sink
    for _ in $(seq "$B_REPS"); do
      while IFS='|' read -r name count cmd; do
        # shellcheck disable=SC2086
        run_client "$cpu" "$count" $cmd
        if [ "$RUN_OK" = 1 ]; then
          record b "$placement" "$name" "$(awk -v n="$count" -v t="$RUN_ELAPSED" 'BEGIN { printf "%.1f", n / t }')" msg/s
        else
          record b "$placement" "$name" FAIL msg/s
        fi
      done <<EOF
smtp-source|$B_N|smtp-source -l $SIZE -m $B_N -s 1 127.0.0.1:$SINK_PORT
lua-smtp smtp.send|$B_N|${LUA_CLIENT[*]} oneshot $B_N $SIZE $SINK_PORT
smtplib|$B_N|${PY_CLIENT[*]} oneshot $B_N $SIZE $SINK_PORT
luasocket+nodelay|$B_N|${LS_CLIENT[*]} oneshot $B_N $SIZE $SINK_PORT nodelay
luasocket ($B_SLOW_N msgs)|$B_SLOW_N|${LS_CLIENT[*]} oneshot $B_SLOW_N $SIZE $SINK_PORT
EOF
    done
    stop_sink
  done
fi

# ---- (c) round trips per message through a 10 ms delay -----------------------
# RT/msg = (elapsed(C_LARGE) - elapsed(C_SMALL)) / (C_LARGE - C_SMALL) / 10 ms:
# the slope leaves out connect, greeting, EHLO and QUIT.
if want c; then
  for placement in same cross; do
    cpu=$(placement_cpu "$placement")
    log "(c) round trips via a ${C_DELAY_MS} ms proxy, $placement: $C_REPS runs of $C_SMALL and $C_LARGE messages"
    start_sink
    start_proxy
    for _ in $(seq "$C_REPS"); do
      while IFS='|' read -r name cmd; do
        ok=1; ts=; tl=
        for n in "$C_SMALL" "$C_LARGE"; do
          # shellcheck disable=SC2046
          run_client "$cpu" "$n" $(printf '%s' "$cmd" | sed "s/@N@/$n/g")
          [ "$RUN_OK" = 1 ] || ok=0
          if [ "$n" = "$C_SMALL" ]; then ts=$RUN_ELAPSED; else tl=$RUN_ELAPSED; fi
        done
        if [ "$ok" = 1 ]; then
          record c "$placement" "$name" "$(awk -v a="$ts" -v b="$tl" -v n=$((C_LARGE - C_SMALL)) -v d="$C_DELAY_MS" \
            'BEGIN { printf "%.2f", (b - a) / n / (d / 1000) }')" RT/msg
        else
          record c "$placement" "$name" FAIL RT/msg
        fi
      done <<EOF
smtp-source|smtp-source -d -l $SIZE -m @N@ -s 1 127.0.0.1:$PROXY_PORT
lua-smtp sendmail|${LUA_CLIENT[*]} sendmail @N@ $SIZE $PROXY_PORT
lua-smtp send_many|${LUA_CLIENT[*]} send_many @N@ $SIZE $PROXY_PORT $WINDOW
smtplib|${PY_CLIENT[*]} loop @N@ $SIZE $PROXY_PORT
luasocket+nodelay|${LS_CLIENT[*]} loop @N@ $SIZE $PROXY_PORT nodelay
EOF
    done
    stop_proxy
    stop_sink
  done
fi

# (c) with CHUNKING against a real Postfix (the test harness's private
# instance): BDAT lets a window of messages travel before any reply, but
# only when the caller opts in with an explicit window; both modes shown.
if want c; then
  log "(c) round trips via a ${C_DELAY_MS} ms proxy in front of a real Postfix (CHUNKING and DATA)"
  if out=$(timeout 300 "${LUA_BIN:-lua5.4}" bench/postfix_rt.lua "$WINDOW" 2>&1); then
    while read -r mode rt; do
      case $mode in
        chunking-window) record c postfix "lua-smtp send_many CHUNKING window=${WINDOW:-16} (blind, opt-in)" "$rt" RT/msg ;;
        chunking) record c postfix "lua-smtp send_many CHUNKING, no window (safe)" "$rt" RT/msg ;;
        data) record c postfix "lua-smtp send_many DATA" "$rt" RT/msg ;;
      esac
    done < <(printf '%s\n' "$out" | sed -n 's/^RESULT mode=\([a-z-]*\) rt=\(-\{0,1\}[0-9.]*\).*/\1 \2/p')
    printf '%s\n' "$out" | grep -q '^SKIP' && log "   $(printf '%s\n' "$out" | grep '^SKIP')"
  else
    record c postfix "lua-smtp send_many CHUNKING" FAIL RT/msg
    printf '%s\n' "$out" | tail -5
  fi
fi

# ---- (d) one big message from a file ----------------------------------------
if want d; then
  placement=cross
  log "(d) one $D_MB MB message from a file, $placement: $D_REPS runs"
  BIG="$WORK/big.eml"
  "$PY" - "$BIG" "$D_MB" <<'EOF'
import sys
path, mb = sys.argv[1], int(sys.argv[2])
base = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
        "tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis "
        "nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. ")
twice = base + base
lines = [(twice[(i * 7) % len(base):(i * 7) % len(base) + 70] + "\r\n").encode() for i in range(len(base))]
block = b"".join(lines)
total = mb << 20
head = b"From: bench <a@x.test>\r\nTo: <b@y.test>\r\nSubject: big\r\n\r\n"
with open(path, "wb") as f:
    f.write(head)
    n = len(head)
    while n + len(block) <= total:
        f.write(block)
        n += len(block)
    # The rest in lines of at most 70 characters (+ CRLF).
    rest = total - n
    while rest > 0:
        k = min(72, rest)
        f.write(b"x" * max(0, k - 2) + b"\r\n"[-min(k, 2):])
        rest -= k
EOF
  start_sink
  cpu=$(placement_cpu "$placement")
  for _ in $(seq "$D_REPS"); do
    while IFS='|' read -r name cmd; do
      t0=$(now_ns)
      # shellcheck disable=SC2086
      run_client "$cpu" 1 $cmd
      t1=$(now_ns)
      if [ "$RUN_OK" = 1 ]; then
        # Wall time of the whole process, start-up included, as /usr/bin/time sees it.
        record d "$placement" "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" s
        record d-rss "$placement" "$name" "$(awk -v m="$RUN_RSS" 'BEGIN { printf "%.1f", m / 1024 }')" MB
        record d-cpu "$placement" "$name" "$RUN_CPU" "s cpu"
      else
        record d "$placement" "$name" FAIL s
        record d-rss "$placement" "$name" FAIL MB
      fi
    done <<EOF
curl|curl -s -S smtp://127.0.0.1:$SINK_PORT --mail-from a@x.test --mail-rcpt b@y.test -T $BIG
lua-smtp|${LUA_CLIENT[*]} file $BIG $SINK_PORT
smtplib|${PY_CLIENT[*]} file $BIG $SINK_PORT
luasocket|${LS_CLIENT[*]} file $BIG $SINK_PORT
EOF
  done
  stop_sink
  rm -f "$BIG"
fi

# ---- (e) framing and base64 against memcpy ----------------------------------
if want e; then
  log "(e) framing and base64 over $E_MB MB in 64 KB chunks: $E_REPS runs"
  "$CC" -std=c99 -O2 -Icsrc -o "$WORK/codec_bench" bench/codec_bench.c \
    csrc/smtp_frame.c csrc/smtp_codec.c csrc/smtp_buf.c csrc/smtp_mem.c csrc/smtp_error.c || die "codec_bench did not build"
  for _ in $(seq "$E_REPS"); do
    out=$(timeout -k 5 "$TMO" taskset -c 1 "$WORK/codec_bench" "$E_MB" < /dev/null) || { log "  codec_bench failed"; record e - frame FAIL MB/s; continue; }
    printf '%s\n' "$out" | while read -r _ k m r; do
      record e - "${k#kernel=}" "${m#mbps=}" MB/s "${r#ratio=}"
    done
  done
fi

# ---- (f) a verified STARTTLS connection per message ---------------------------
# bench/tls_bench.lua: a private Postfix (discard transport) on CPU 0; lua-smtp,
# smtplib (one SSLContext), curl and swaks in turn on CPU 1, F_REPS times.
if want f; then
  log "(f) $F_N msgs, a verified STARTTLS connection each, to a private Postfix: $F_REPS runs"
  if out=$(timeout 600 "$LUA" bench/tls_bench.lua "$F_N" "$F_REPS" 2>"$WORK/tls_bench.err"); then
    if printf '%s\n' "$out" | grep -q '^SKIP'; then
      log "   $(printf '%s\n' "$out" | grep '^SKIP')"
    fi
    while read -r name ok mps ccpu scpu; do
      if [ "$ok" = "$F_N" ]; then
        record f tls "$name" "$mps" msg/s
        record f-cpu tls "$name" "$ccpu" ms/msg
        record f-srv tls "$name" "$scpu" ms/msg
      else
        record f tls "$name" FAIL msg/s
      fi
    done < <(printf '%s\n' "$out" | sed -n \
      's/^RESULT client=\([^ ]*\) rep=[0-9]* ok=\([0-9]*\) msgps=\([0-9.]*\) client_cpu_ms=\([0-9.]*\) server_cpu_ms=\([0-9.]*\).*/\1 \2 \3 \4 \5/p')
  else
    record f tls lua-smtp FAIL msg/s
  fi
  sed 's/^/    /' "$WORK/tls_bench.err" | head -n 20 >&2
fi

# ---- (g) peak RSS sending a large attachment to a real Postfix --------------
# bench/rss.sh: one smtp.send with attachments = { { path = <G_MB MB file> } }
# per path, each client process under /usr/bin/time -v; the delivered file
# is checked (size, and the attachment decoded against the original).
if want g; then
  log "(g) peak RSS of one client sending a $G_MB MB attachment to a private Postfix (DATA, CHUNKING+PIPELINING, CHUNKING alone)"
  out=$(RSS_MB=$G_MB BENCH_NO_MAKE=1 bash bench/rss.sh 2>&1)
  printf '%s\n' "$out" | grep -v '^RESULT' | sed 's/^/    /' >&2
  if ! printf '%s\n' "$out" | grep -q '^SKIP'; then
    n=0; f_met=0; f_over=""
    while read -r path mb sent att; do
      case $path in
        data) name="lua-smtp DATA" ;;
        chunking) name="lua-smtp CHUNKING+PIPELINING" ;;
        *) name="lua-smtp CHUNKING alone" ;;
      esac
      n=$((n + 1))
      if [ "$sent" = 1 ] && [ "$att" = ok ] && [ "$mb" != nan ]; then
        record g postfix "$name" "$mb" MB
        if awk -v m="$mb" 'BEGIN { exit !(m < 16) }'; then f_met=$((f_met + 1)); else f_over="${f_over:+$f_over; }$name $mb MB"; fi
      else
        f_over="${f_over:+$f_over; }$name FAILED"
        record g postfix "$name" FAIL MB
      fi
    done < <(printf '%s\n' "$out" | sed -n \
      's/^RESULT path=\([a-z-]*\) rss_mb=\([0-9.a-z]*\) under=[a-z]* sent=\([01]\) delivered_bytes=[0-9]* attachment=\([a-zA-Z]*\).*/\1 \2 \3 \4/p')
    [ "$n" -gt 0 ] || record g postfix "lua-smtp" FAIL MB
    G_NOTE=("g: target < 16 MB met on $f_met of $n paths${f_over:+ (missed: $f_over)}")
  fi
fi

# ---- (h) DKIM signing cost ------------------------------------------------------
if want h; then
  for rep in $(seq "$H_REPS"); do
    log "(h) DKIM signing, $H_N x 1 KB and $H_MB MB: run $rep of $H_REPS"
    out=$(taskset -c 1 timeout "$TMO" "$LUA" bench/dkim.lua "$H_N" "$H_MB" 2>&1)
    n=0
    while read -r name unit value; do
      [ "$unit" = us_per_msg ] && u="us/msg" || u="ms/MB"
      record h CPU1 "$name" "$value" "$u"
      n=$((n + 1))
    done < <(printf '%s\n' "$out" | sed -n 's/^RESULT case=\([^ ]*\) unit=\([a-z_]*\) value=\([0-9.]*\).*/\1 \2 \3/p')
    if [ "$n" = 0 ]; then
      record h CPU1 "dkim" FAIL "us/msg"
      printf '%s\n' "$out" | head -n 5 | sed 's/^/    /' >&2
    fi
  done
fi

# ---- the table ----------------------------------------------------------------
print_table
