-- The client process that bench/rss.sh measures with /usr/bin/time -v:
-- one smtp.send with a file attachment to 127.0.0.1:PORT (the private
-- Postfix that bench/rss.lua starts), over one of three paths:
--   data             chunking = false: DATA
--   chunking         the defaults: CHUNKING and PIPELINING
--   chunking-alone   pipelining = false: CHUNKING without PIPELINING
-- Usage (from the repository root, after make):
--   lua5.4 bench/rss_client.lua PORT FILE PATH
-- Prints "RESULT ok=1 code=250" (or "RESULT ok=0 error=...") and exits 0 / 1.
local interpreter = (arg and arg[-1] or "lua5.4"):match("[^/]*$")
package.path = "./lua/?.lua;" .. package.path
package.cpath = "./build/" .. interpreter .. "/?.so;" .. package.cpath
local smtp = require "smtp"

local port, file, path = tonumber(arg[1]), arg[2], arg[3]
local PATHS = {
  data = { chunking = false },
  chunking = {},
  ["chunking-alone"] = { pipelining = false },
}
if not (port and file and PATHS[path]) then
  io.stderr:write("usage: lua5.4 bench/rss_client.lua PORT FILE data|chunking|chunking-alone\n")
  os.exit(2)
end

local res, err, info = smtp.send{
  host = "127.0.0.1", port = port, tls = "none", helo = "rss.bench.test",
  timeout = 120, chunking = PATHS[path].chunking, pipelining = PATHS[path].pipelining,
  from = "Bench <bench@example.com>", to = "sink@example.net",
  subject = "rss bench: " .. path,
  text = "The attachment is " .. file:match("[^/]*$") .. ".\n",
  attachments = { { path = file, filename = "random.bin" } },
}
if res then
  print(string.format("RESULT ok=1 code=%s heap_kb=%.0f", tostring(res.code), collectgarbage("count")))
  os.exit(0)
end
print(string.format("RESULT ok=0 kind=%s stage=%s error=%s", tostring(info and info.kind),
  tostring(info and info.stage), tostring(err)))
os.exit(1)
