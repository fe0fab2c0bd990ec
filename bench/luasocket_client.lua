-- Benchmark driver for LuaSocket's socket.smtp (Debian's lua-socket).
--
--   lua5.4 bench/luasocket_client.lua loop|oneshot COUNT SIZE PORT [nodelay]
--   lua5.4 bench/luasocket_client.lua file PATH PORT [nodelay]
--
-- loop     smtp.open() + :greet() once, COUNT x :send{from, rcpt, source}, :quit()
--          (socket.smtp's low-level session object: smtp.send opens a
--          connection for every message)
-- oneshot  COUNT x smtp.send{server, port, from, rcpt, source}
-- file     smtp.send with ltn12.source.file(io.open(PATH))
--
-- As shipped, LuaSocket leaves Nagle's algorithm on, and socket.smtp writes
-- the end of data ("\r\n.\r\n") as its own small segment after the body:
-- it waits for the server's delayed ACK (about 40 ms on Linux) on every
-- message. "nodelay" passes socket.smtp a `create` function that sets
-- TCP_NODELAY, to show what LuaSocket does once that is tuned; the client
-- then reports itself as luasocket+nodelay.
--
-- socket.smtp raises on any reply other than the expected 2xx/3xx, so a
-- message counts as sent when its call returned without error. Prints
-- "RESULT client=luasocket mode=MODE ok=N fail=N elapsed=SECONDS" and exits 1
-- on any failure.
local socket = require "socket"
local smtp = require "socket.smtp"
local ltn12 = require "ltn12"
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../?.lua;" .. package.path
local util = require "spec.support.util"

local FROM, TO = "<a@x.test>", "<b@y.test>"
local HOST = "127.0.0.1"

-- The same message as bench/lua_smtp_client.lua builds.
local make_message = util.bench_message

local function usage()
  io.stderr:write("usage: luasocket_client.lua loop|oneshot COUNT SIZE PORT\n" ..
    "       luasocket_client.lua file PATH PORT\n")
  os.exit(2)
end

local mode = arg[1]
local nodelay = arg[#arg] == "nodelay"
local create, NAME = nil, "luasocket"
if nodelay then
  NAME = "luasocket+nodelay"
  create = function()
    local c = assert(socket.tcp4())
    assert(c:setoption("tcp-nodelay", true))
    return c
  end
end
local ok_n = 0
local failed = util.failure_counter(NAME)

local count, t0, t1
if mode == "file" then
  local path, port = arg[2], tonumber(arg[3])
  if not path or not port then usage() end
  count = 1
  t0 = socket.gettime()
  local f = assert(io.open(path, "rb"))
  local r, e = smtp.send{ server = HOST, port = port, from = FROM, rcpt = TO,
    source = ltn12.source.file(f), create = create }
  t1 = socket.gettime()
  if r then ok_n = 1 else failed(1, e) end
else
  count = tonumber(arg[2])
  local size, port = tonumber(arg[3]), tonumber(arg[4])
  if not count or not size or not port then usage() end
  local raw = make_message(size)
  if mode == "loop" then
    t0 = socket.gettime()
    local okc, s = pcall(smtp.open, HOST, port, create)
    if not okc then
      failed("connect", s)
    else
      local okg, gerr = pcall(s.greet, s, "bench.local")
      if not okg then
        failed("greet", gerr)
      else
        for i = 1, count do
          local okm, e = pcall(s.send, s, { from = FROM, rcpt = TO,
            source = ltn12.source.string(raw) })
          if okm then ok_n = ok_n + 1 else failed(i, e) end
        end
        pcall(s.quit, s)
      end
      pcall(s.close, s)
    end
    t1 = socket.gettime()
  elseif mode == "oneshot" then
    t0 = socket.gettime()
    for i = 1, count do
      local r, e = smtp.send{ server = HOST, port = port, from = FROM, rcpt = TO,
        source = ltn12.source.string(raw), create = create }
      if r then ok_n = ok_n + 1 else failed(i, e) end
    end
    t1 = socket.gettime()
  else
    usage()
  end
end

print(string.format("RESULT client=%s mode=%s ok=%d fail=%d elapsed=%.6f",
  NAME, mode, ok_n, failed(), t1 - t0))
os.exit((failed() == 0 and ok_n == count) and 0 or 1)
