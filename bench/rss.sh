#!/usr/bin/env bash
# Peak RSS of a lua5.4 client process sending a 100 MB attachment
# (smtp.send with attachments = { { path = ... } }) to a private Postfix
# on 127.0.0.1 (the test harness's instance, spec/support/postfix.lua,
# with message_size_limit raised), over three paths:
#   DATA (chunking = false), CHUNKING + PIPELINING (the default),
#   CHUNKING alone (pipelining = false).
# Measured with /usr/bin/time -v around the client alone; the target is a
# peak RSS under 16 MB whatever the attachment's size.  Each delivered file
# is checked: its size, and the attachment decoded from it against the
# original (sha256).
#
#   bash bench/rss.sh                   all three paths, 100 MB
#   RSS_MB=20 bash bench/rss.sh         a smaller attachment
#   bash bench/rss.sh chunking-alone    some paths only (data chunking chunking-alone)
#   RSS_LIMIT=600                       seconds for the whole run (default 480)
#   BENCH_NO_MAKE=1                     do not run make first
#
# Output: one line per path, then "RESULT path=... rss_mb=... under=yes|no
# sent=0|1 delivered_bytes=N attachment=ok|BAD|missing" lines (bench/run.sh
# reads those).  Exit status 0 when every message was sent and delivered
# intact (met target or not), 1 when one was not, 3 when something needed
# is missing.  Needs root and the Debian packages postfix, dovecot-core,
# openssl, time, coreutils; Postfix and the client are stopped by PID when
# the run ends (the harness's own cleanup; setpriv --pdeathsig should the
# time limit kill the driver).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3
LUA=${LUA:-lua5.4}
export LUA

[ -x /usr/bin/time ] || { echo "rss: missing /usr/bin/time (apt-get install time)" >&2; exit 3; }
for tool in "$LUA" base64 sha256sum timeout; do
  command -v "$tool" > /dev/null 2>&1 || { echo "rss: missing $tool" >&2; exit 3; }
done
if [ -z "${BENCH_NO_MAKE:-}" ]; then
  make -s --no-print-directory LUA="$LUA" >&2 || { echo "rss: make failed" >&2; exit 3; }
fi
[ -f "build/$LUA/smtp/core.so" ] || { echo "rss: build/$LUA/smtp/core.so is missing: run make" >&2; exit 3; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lua-smtp-rss.XXXXXX") || exit 3
trap 'rm -rf "$WORK"' EXIT

echo "== peak RSS of one client process sending a ${RSS_MB:-100} MB attachment to Postfix ($(date -u '+%Y-%m-%d %H:%M UTC'))"
timeout -k 10 "${RSS_LIMIT:-480}" "$LUA" bench/rss.lua "$WORK" "${RSS_MB:-100}" "$@"
rc=$?
[ "$rc" = 124 ] && echo "rss: stopped by the time limit (${RSS_LIMIT:-480} s)" >&2
exit "$rc"
