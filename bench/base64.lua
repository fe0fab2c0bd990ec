-- Base64 throughput of the C codec: 256 MB through core.b64encode (one
-- call a block) and through the streaming core.b64_encoder (what message
-- sources use for attachment files), in 1 MB blocks (by default) with
-- 76-column lines.
--   lua5.4 bench/base64.lua [total_mb [rounds [block_kb]]]
-- Run from the repository root after `make` (`make LUA=luajit` for luajit).
-- Each method runs `rounds` times (default 3): the machine may be busy, so
-- the best round is the codec's speed and the median what to expect.
-- block_kb (default 1024): LuaJIT maps every string over 128 KB afresh, so
-- there 1 MB blocks measure page faults more than base64; message sources
-- read 64 KB blocks.
local interpreter = (arg and arg[-1] or "lua5.4"):match("[^/]*$")
package.path = "./lua/?.lua;" .. package.path
package.cpath = "./build/" .. interpreter .. "/?.so;" .. package.cpath
local core = require "smtp.core"
local mime = require "smtp.mime"

local total_mb = tonumber(arg and arg[1]) or 256
local rounds = tonumber(arg and arg[2]) or 3
local BLOCK = 1024 * (tonumber(arg and arg[3]) or 1024)
local blocks = total_mb * 1024 * 1024 / BLOCK

-- One block of incompressible bytes; the codec's speed does not depend on
-- the values, but random data keeps the benchmark honest.
local function random_block()
  local f = io.open("/dev/urandom", "rb")
  local s = f and f:read(BLOCK)
  if f then f:close() end
  if s and #s == BLOCK then return s end
  local t = {}
  for i = 1, BLOCK do t[i] = string.char((i * 7919) % 256) end
  return table.concat(t)
end

local block = random_block()

local function one_shot()
  local out = 0
  for _ = 1, blocks do out = out + #core.b64encode(block, 76) end
  return out
end

local function streaming()
  local enc, out = core.b64_encoder(76), 0
  for _ = 1, blocks do out = out + #enc:update(block) end
  return out + #enc:finish()
end

-- Runs fn `rounds` times; prints each round, the best and the median.
-- want: the output size fn must produce, so nothing is skipped.
local function bench(name, fn, want)
  local speeds, out = {}, 0
  for r = 1, rounds do
    collectgarbage()
    local t0 = core.now()
    out = fn()
    local seconds = core.now() - t0
    speeds[r] = total_mb / seconds
    print(string.format("%-24s round %d: %d MB in %.3f s = %.0f MB/s", name, r, total_mb, seconds, speeds[r]))
  end
  assert(out == want, name .. ": unexpected output size " .. out)
  table.sort(speeds)
  print(string.format("%-24s best %.0f MB/s, median %.0f MB/s", name, speeds[#speeds],
    speeds[math.floor((#speeds + 1) / 2)]))
end

print(string.format("%s, smtp.core %s, %d MB in blocks of %d KB", _VERSION, core.version or "?",
  total_mb, BLOCK / 1024))
bench("core.b64encode", one_shot, blocks * mime.base64_size(BLOCK))
bench("core.b64_encoder:update", streaming, mime.base64_size(blocks * BLOCK))
