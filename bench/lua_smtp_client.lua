-- Benchmark driver for lua-smtp.
--
--   lua5.4 bench/lua_smtp_client.lua MODE COUNT SIZE PORT [WINDOW]
--   lua5.4 bench/lua_smtp_client.lua file PATH PORT
--
-- MODE:
--   sendmail   one smtp.connect, COUNT x s:sendmail(from, rcpts, raw), s:quit()
--   send_many  one smtp.connect, s:send_many{...COUNT messages...}, s:quit()
--              (WINDOW, when given, is passed as s:send_many(list, { window = WINDOW }))
--   oneshot    COUNT x smtp.send{...}: a new connection for every message
--   tls        like oneshot, over STARTTLS with the certificate verified for
--              127.0.0.1 against CAFILE (the fifth argument instead of WINDOW)
--   tls-noresume  the same, forgetting the kept TLS sessions before each
--              message (contexts still kept): what resumption saves
--   tls-nocache   the same, forgetting contexts too: every connection builds
--              its context and loads the trust store, as before the cache
--   file       smtp.send{ message = io.open(PATH, "rb") }: one message streamed from a file
--
-- A message counts as sent only when the call returned a result (the
-- server's 2xx to the end of data). Prints one line
--   RESULT client=lua-smtp mode=MODE ok=N fail=N elapsed=SECONDS
-- (the time from just before the first connect to just after the last
-- quit; building the message list is not timed) and exits 1 when any
-- message failed or fewer than COUNT succeeded. The first failures go to
-- stderr.
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local root = here .. "/.."
local luav = _VERSION:gsub("Lua ", "lua")
package.path = root .. "/lua/?.lua;" .. root .. "/?.lua;" .. package.path
package.cpath = root .. "/build/" .. (os.getenv("LUA") or luav) .. "/?.so;" .. package.cpath

local smtp = require "smtp"
local core = require "smtp.core"
local util = require "spec.support.util"

local FROM, TO = "a@x.test", { "b@y.test" }
local HOST = "127.0.0.1"

-- The same message as bench/smtplib_client.py and bench/luasocket_client.lua
-- build: a few headers and lines of 70 characters of text, CRLF line ends,
-- SIZE octets in all (spec/support/util.lua).
local make_message = util.bench_message

local function usage()
  io.stderr:write("usage: lua_smtp_client.lua sendmail|send_many|oneshot COUNT SIZE PORT [WINDOW]\n" ..
    "       lua_smtp_client.lua tls|tls-noresume|tls-nocache COUNT SIZE PORT CAFILE\n" ..
    "       lua_smtp_client.lua file PATH PORT\n")
  os.exit(2)
end

local mode = arg[1]
local ok_n = 0
local failed = util.failure_counter("lua-smtp")

local count, t0, t1
if mode == "file" then
  local path, port = arg[2], tonumber(arg[3])
  if not path or not port then usage() end
  count = 1
  local f = assert(io.open(path, "rb"))
  t0 = core.now()
  local res, err = smtp.send{ host = HOST, port = port, tls = "none",
    envelope = { from = FROM, to = TO }, message = f }
  t1 = core.now()
  f:close()
  if res then ok_n = 1 else failed(1, err) end
else
  count = tonumber(arg[2])
  local size, port = tonumber(arg[3]), tonumber(arg[4])
  local window = tonumber(arg[5])
  local cafile = arg[5]
  if not count or not size or not port then usage() end
  local raw = make_message(size)
  if mode == "sendmail" then
    t0 = core.now()
    local s, err = smtp.connect{ host = HOST, port = port, tls = "none" }
    if not s then
      failed("connect", err)
    else
      for i = 1, count do
        local res, e = s:sendmail(FROM, TO, raw)
        if res then ok_n = ok_n + 1 else failed(i, e) end
      end
      s:quit()
    end
    t1 = core.now()
  elseif mode == "send_many" then
    local list = {}
    for i = 1, count do list[i] = { envelope = { from = FROM, to = TO }, message = raw } end
    t0 = core.now()
    local s, err = smtp.connect{ host = HOST, port = port, tls = "none" }
    if not s then
      failed("connect", err)
    else
      local results
      if window then
        results = s:send_many(list, { window = window })
      else
        results = s:send_many(list)
      end
      for i = 1, count do
        local r = results[i]
        if r and not r.error and r.code then ok_n = ok_n + 1
        else failed(i, r and r.error or "no result") end
      end
      s:quit()
    end
    t1 = core.now()
  elseif mode == "oneshot" then
    t0 = core.now()
    for i = 1, count do
      local res, e = smtp.send{ host = HOST, port = port, tls = "none",
        envelope = { from = FROM, to = TO }, message = raw }
      if res then ok_n = ok_n + 1 else failed(i, e) end
    end
    t1 = core.now()
  elseif mode == "tls" or mode == "tls-noresume" or mode == "tls-nocache" then
    if not cafile then usage() end
    t0 = core.now()
    for i = 1, count do
      if mode ~= "tls" then core.tls_cache_clear(mode == "tls-nocache") end
      local res, e = smtp.send{ host = HOST, port = port, tls = "starttls", cafile = cafile,
        envelope = { from = FROM, to = TO }, message = raw }
      if res then ok_n = ok_n + 1 else failed(i, e) end
    end
    t1 = core.now()
  else
    usage()
  end
end

print(string.format("RESULT client=lua-smtp mode=%s ok=%d fail=%d elapsed=%.6f",
  mode, ok_n, failed(), t1 - t0))
os.exit((failed() == 0 and ok_n == count) and 0 or 1)
