#!/usr/bin/env bash
# Soak test runner: builds smtp.core, then runs bench/soak.lua (see its
# header) against Postfix's smtp-sink, bounded by SOAK_LIMIT seconds
# (default 1200).  Arguments are passed on (phases: many sendmail sessions).
#
#   bash bench/soak.sh                          # 100,000 + 100,000 messages, 5,000 sessions
#   SOAK_MESSAGES=10000 SOAK_SESSIONS=500 bash bench/soak.sh sessions
#   SOAK_LOG=/tmp/soak.log bash bench/soak.sh   # also keep the output
#
# Exit status: soak.lua's (0 pass, 1 a check failed), 124 on the time limit,
# 3 when the build failed or smtp-sink is missing.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3
LUA=${LUA:-lua5.4}

if ! command -v smtp-sink > /dev/null 2>&1 && [ ! -x /usr/sbin/smtp-sink ]; then
  echo "soak: smtp-sink not found (Debian: apt-get install postfix)" >&2
  exit 3
fi
if [ -z "${SOAK_NO_MAKE:-}" ]; then
  make -s LUA="$LUA" || { echo "soak: make failed" >&2; exit 3; }
fi

# smtp-sink is started and stopped by soak.lua itself.  Should the time
# limit hit (or lua fail), the sink would be left running: its PID, from
# soak.lua's "smtp-sink pid N" line, is checked and stopped here too.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
timeout -k 10 "${SOAK_LIMIT:-1200}" "$LUA" bench/soak.lua "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  pid=$(sed -n 's/^soak: smtp-sink pid \([0-9]*\) .*/\1/p' "$out" | head -1)
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q smtp-sink; then
    kill -TERM "$pid" 2>/dev/null
  fi
fi
[ -n "${SOAK_LOG:-}" ] && cp "$out" "$SOAK_LOG"
exit "$rc"
