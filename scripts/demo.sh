#!/usr/bin/env bash
# make demo: starts the embedded debug server on a free port, sends one
# message through it with the transcript on, shows what the server got.
set -eu
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
out=$(mktemp)
"$LUA" bin/smtp-debug-server --port 0 --max-messages 1 > "$out" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$out"' EXIT

port=""
for _ in $(seq 100); do
  port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "the debug server did not start:"; cat "$out"; exit 1; }

echo "== smtp-debug-server listening on 127.0.0.1:$port (pid $pid)"
echo "== examples/send.lua (debug = 1: the transcript goes to stderr)"
LUA_PATH="./lua/?.lua;;" LUA_CPATH="./build/$LUA/?.so;;" \
  "$LUA" examples/send.lua 127.0.0.1 "$port"

for _ in $(seq 100); do grep -q "END MESSAGE" "$out" && break; sleep 0.05; done
echo
echo "== what the server received"
sed -n '/MESSAGE FOLLOWS/,/END MESSAGE/p' "$out"
