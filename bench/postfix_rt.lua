-- (c) with CHUNKING against a real Postfix: round trips per message through
-- a proxy that delays every server->client chunk by 10 ms. Starts the test
-- harness's private Postfix (spec/support/postfix.lua: needs root, postfix
-- and dovecot), the delay proxy in front of its plain port, and sends N
-- messages with s:send_many for N = 5 and 55, in three modes:
--   chunking-window  BDAT with window = WINDOW given explicitly: the opt-in
--                    to blind windows (bodies sent before their envelope
--                    replies are in; the delivery record says "maybe" for
--                    what was in flight when something fails)
--   chunking         BDAT without a window: each body waits for its MAIL and
--                    RCPT replies (the default, and the full guarantee)
--   data             DATA, no window
-- Prints "RESULT mode=<m> rt=<RT/msg> ok=<n>" lines for bench/run.sh.
-- Usage: lua5.4 bench/postfix_rt.lua [window]
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = "./build/lua5.4/?.so;" .. package.cpath

local smtp = require "smtp"
local core = require "smtp.core"
local postfix = require "spec.support.postfix"

local WINDOW = tonumber(arg[1]) or 16
local DELAY_MS = 10
local SMALL, LARGE = 5, 55
local PY = "/usr/bin/python3"

if not postfix.available() then
  print("SKIP postfix or dovecot missing, or not root")
  os.exit(0)
end

local pf = postfix.start{ users = { { "bench", "bench" } } }
local proxy_out = os.tmpname()
local proxy = io.popen("echo $$; exec " .. PY .. " bench/delay_proxy.py 0 " .. pf.ports.plain ..
  " " .. DELAY_MS .. " 120 > " .. proxy_out .. " 2>&1")
local proxy_pid = proxy:read("*l")
local port
for _ = 1, 200 do
  local f = io.open(proxy_out)
  local text = f and f:read("*a") or ""
  if f then f:close() end
  port = text:match("listening on 127%.0%.0%.1:(%d+)")
  if port then break end
  os.execute("sleep 0.025")
end

local function cleanup()
  os.execute("kill " .. proxy_pid .. " 2>/dev/null")
  proxy:close()
  os.remove(proxy_out)
  pf:stop()
end
if not port then
  cleanup()
  error("the delay proxy did not start")
end

local body = "Subject: bench\r\n\r\n" .. string.rep(string.rep("x", 76) .. "\r\n", 12)

-- Seconds to send n messages on one session, leaving out connect and QUIT.
local function timed(n, chunking, window)
  local s = assert(smtp.connect{ host = "127.0.0.1", port = tonumber(port), tls = "none",
                                 helo = "bench.test", chunking = chunking, window = window })
  local list = {}
  for i = 1, n do
    list[i] = { envelope = { from = "a@example.com", to = { "b@example.net" } }, message = body }
  end
  local t0 = core.now()
  local results = s:send_many(list)
  local t1 = core.now()
  s:quit()
  local ok = 0
  for _, r in ipairs(results) do if r.accepted then ok = ok + 1 end end
  return t1 - t0, ok, s.capabilities.CHUNKING ~= nil
end

local status = 0
for _, mode in ipairs({ "chunking-window", "chunking", "data" }) do
  local chunking = mode ~= "data"
  local window = mode == "chunking-window" and WINDOW or nil
  local ts, oks, offered = timed(SMALL, chunking, window)
  local tl, okl = timed(LARGE, chunking, window)
  local rt = (tl - ts) / (LARGE - SMALL) / (DELAY_MS / 1000)
  print(string.format("RESULT mode=%s rt=%.2f ok=%d chunking_offered=%s", mode, rt, oks + okl,
    tostring(offered)))
  if oks + okl ~= SMALL + LARGE then status = 1 end
end
cleanup()
os.exit(status)
