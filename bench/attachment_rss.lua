-- Peak memory of streaming a message with a large attachment: builds a
-- message around a 100 MB file of random bytes (made with dd from
-- /dev/urandom) and writes msg:source() to /dev/null, block by block.
-- Run it under GNU time and read "Maximum resident set size":
--   /usr/bin/time -v lua5.4 bench/attachment_rss.lua [size_mb]
-- from the repository root after `make`. The target is < 32 MB whatever
-- the attachment's size: the file is read in 64 KB blocks, never whole.
local interpreter = (arg and arg[-1] or "lua5.4"):match("[^/]*$")
package.path = "./lua/?.lua;" .. package.path
package.cpath = "./build/" .. interpreter .. "/?.so;" .. package.cpath
local smtp = require "smtp"
local core = require "smtp.core"

local size_mb = tonumber(arg and arg[1]) or 100
local path = os.tmpname()

local function run(cmd)
  local ok = os.execute(cmd)
  assert(ok == true or ok == 0, "failed: " .. cmd)
end

run(string.format("dd if=/dev/urandom of=%s bs=1M count=%d status=none", path, size_mb))

local msg = assert(smtp.message{
  from = "Bench <bench@example.com>", to = "sink@example.com",
  subject = "attachment of " .. size_mb .. " MB", text = "See the attachment.\n",
  attachments = { { path = path, filename = "random.bin" } },
})

local t0 = core.now()
local out = assert(io.open("/dev/null", "wb"))
local src, written, chunks, biggest = msg:source(), 0, 0, 0
while true do
  local chunk, err = src()
  if not chunk then
    assert(not err, err)
    break
  end
  out:write(chunk)
  written = written + #chunk
  chunks = chunks + 1
  if #chunk > biggest then biggest = #chunk end
end
out:close()
local seconds = core.now() - t0
os.remove(path)

assert(written == msg.size, "size mismatch: wrote " .. written .. ", announced " .. tostring(msg.size))
print(string.format("%d MB attachment: %d octets in %d chunks (largest %d) in %.2f s, %.0f MB/s; "
  .. "Lua heap at the end %.0f KB", size_mb, written, chunks, biggest, seconds,
  size_mb / seconds, collectgarbage("count")))
