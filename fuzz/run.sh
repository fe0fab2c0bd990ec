#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS seconds each and prints one
# TAP line per target; exits non-zero on any finding.
#
#   bash fuzz/run.sh SECONDS [TARGET...]
#
# TARGETs: fuzz_reply fuzz_frame fuzz_codec fuzz_sasl fuzz_engine address
# (default: all). Targets run JOBS at a time (default: the number of CPUs).
# The libFuzzer targets are built with clang -fsanitize=fuzzer,address,
# undefined into build/fuzz/; each works on a copy of its seed corpus in
# build/fuzz/corpus/<target>/ (new inputs stay there and are reused by the
# next run, FUZZ_FRESH=1 starts from the seeds again; fuzz/corpus/ is never
# written). Findings are saved as build/fuzz/crash-* (also leak-, timeout-,
# oom-), logs as build/fuzz/<target>.log. To replay one:
#   build/fuzz/fuzz_engine build/fuzz/crash-...        (FUZZ_TRACE=1 for a trace)
#   lua5.4 fuzz/address_fuzz.lua replay build/fuzz/crash-address-...
set -u
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-60}
shift || true
ALL="fuzz_reply fuzz_frame fuzz_codec fuzz_sasl fuzz_engine address"
TARGETS=${*:-$ALL}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
OUT=build/fuzz
CC=${FUZZ_CC:-clang}
CFLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Icsrc"
mkdir -p "$OUT/corpus"

# One run at a time: two would share the binaries, logs and corpora.
if command -v flock >/dev/null; then
  exec 9> "$OUT/.run.lock"
  flock -n 9 || { echo "# waiting for another fuzz/run.sh to finish" >&2; flock 9; }
fi

sources() {   # the csrc files each target links
  local base="csrc/smtp_mem.c csrc/smtp_buf.c csrc/smtp_error.c"
  case $1 in
    fuzz_reply)  echo "$base csrc/smtp_reply.c" ;;
    fuzz_frame)  echo "$base csrc/smtp_frame.c" ;;
    fuzz_codec)  echo "$base csrc/smtp_codec.c" ;;
    fuzz_sasl)   echo "$base csrc/smtp_codec.c csrc/smtp_sasl.c" ;;
    fuzz_engine) echo "$base csrc/smtp_reply.c csrc/smtp_frame.c csrc/smtp_engine.c csrc/smtp_codec.c csrc/smtp_sasl.c" ;;
  esac
}

libs() {
  case $1 in
    fuzz_sasl|fuzz_engine) echo "-lssl -lcrypto -lidn -lidn2" ;;
  esac
}

# run_target NAME: writes "<status>|<message>" to $OUT/NAME.result.
run_target() {
  local t=$1 log=$OUT/$1.log res=$OUT/$1.result
  rm -f "$res"
  if [ "$t" = address ]; then
    if ! command -v lua5.4 >/dev/null; then echo "fail|lua5.4 not installed" > "$res"; return; fi
    if [ ! -f build/lua5.4/smtp/core.so ] && ! make -s LUA=lua5.4 > "$log" 2>&1; then
      echo "fail|smtp.core build failed (see $log)" > "$res"; return
    fi
    mkdir -p "$OUT/corpus/address"
    cp fuzz/corpus/address/* "$OUT/corpus/address/"
    lua5.4 fuzz/address_fuzz.lua "$SECONDS_EACH" "$OUT/corpus/address" "$OUT" > "$log" 2>&1
    local rc=$? execs
    execs=$(sed -n 's/^execs \([0-9]*\)$/\1/p' "$log" | tail -1)
    if [ $rc -eq 0 ]; then
      echo "ok|${execs:-0} execs, no findings" > "$res"
    else
      local saved
      saved=$(sed -n 's/^saved: //p' "$log" | tail -1)
      echo "fail|finding: $(grep -m1 '^FAIL' "$log" | cut -c1-200) (see ${saved:-$log})" > "$res"
    fi
    return
  fi

  # shellcheck disable=SC2046
  if ! $CC $CFLAGS -o "$OUT/$t" "fuzz/$t.c" $(sources "$t") $(libs "$t") > "$log" 2>&1; then
    echo "fail|build failed (see $log)" > "$res"; return
  fi
  [ "${FUZZ_FRESH:-0}" = 1 ] && rm -rf "$OUT/corpus/$t"
  mkdir -p "$OUT/corpus/$t"
  [ -d "fuzz/corpus/$t" ] && cp fuzz/corpus/"$t"/* "$OUT/corpus/$t/" 2>/dev/null
  local crash execs
  "./$OUT/$t" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$OUT/" "$OUT/corpus/$t" >> "$log" 2>&1
  local rc=$?
  # libFuzzer names the input it saved: "Test unit written to <path>".
  crash=$(sed -n 's/.*Test unit written to \([^ ]*\).*/\1/p' "$log" | head -1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -1)
  if [ $rc -eq 0 ] && [ -z "$crash" ]; then
    echo "ok|${execs:-0} execs, no findings" > "$res"
  elif [ -n "$crash" ]; then
    local kind
    kind=$(basename "$crash")
    echo "fail|${kind%%-*} (see $crash)" > "$res"
  else
    echo "fail|libFuzzer exited $rc (see $log)" > "$res"
  fi
}

running() {   # how many of the started targets still run
  local p c=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && c=$((c + 1)); done
  echo "$c"
}

# Run JOBS targets at a time.
pids=()
for t in $TARGETS; do
  case " $ALL " in *" $t "*) ;; *) echo "unknown target: $t" >&2; exit 2 ;; esac
  run_target "$t" &
  pids+=($!)
  while [ "$(running)" -ge "$JOBS" ]; do sleep 1; done
done
wait "${pids[@]}" 2>/dev/null

n=0 failed=0
set -- $TARGETS
echo "1..$#"
for t in $TARGETS; do
  n=$((n + 1))
  res=$(cat "$OUT/$t.result" 2>/dev/null || echo "fail|no result")
  status=${res%%|*} msg=${res#*|}
  if [ "$status" = ok ]; then
    echo "ok $n - $t: $msg"
  else
    echo "not ok $n - $t: $msg"
    failed=$((failed + 1))
  fi
done
[ "$failed" -eq 0 ]
