-- Where the Lua side of lua-smtp spends its VM instructions: runs
-- bench/lua_smtp_client.lua under a count hook (a sample every 1,000 VM
-- instructions) and prints the functions and lines hit most.
--
--   lua5.4 bench/lua_hook_profile.lua sendmail 2000 1024 PORT
--
-- The hook sees only Lua code: time inside C functions (the engine,
-- send/recv/poll) is not sampled; perf and callgrind in bench/profile.sh
-- cover that side.
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local PERIOD = 1000
local funcs, lines, total = {}, {}, 0

local function hook()
  local info = debug.getinfo(2, "Sl")
  if not info then return end
  total = total + 1
  local src = info.short_src:gsub("^.*/lua/", "lua/"):gsub("^.*/bench/", "bench/")
  local f = src .. ":" .. tostring(info.linedefined)
  funcs[f] = (funcs[f] or 0) + 1
  local l = src .. ":" .. tostring(info.currentline)
  lines[l] = (lines[l] or 0) + 1
end

local function top(t, n)
  local list = {}
  for k, v in pairs(t) do list[#list + 1] = { k, v } end
  table.sort(list, function(a, b) return a[2] > b[2] end)
  for i = 1, math.min(n, #list) do
    io.write(string.format("  %6.2f%%  %s\n", 100 * list[i][2] / total, list[i][1]))
  end
end

local function report()
  debug.sethook()
  io.write(string.format("lua hook samples: %d (one per %d VM instructions)\n", total, PERIOD))
  io.write("functions (file:line where the function is defined), self samples:\n")
  top(funcs, 20)
  io.write("lines:\n")
  top(lines, 20)
  io.flush()
end

local real_exit = os.exit
os.exit = function(...) report(); return real_exit(...) end -- luacheck: ignore 122

local client = here .. "/lua_smtp_client.lua"
local args = { [0] = client }
for i = 1, #arg do args[i] = arg[i] end
arg = args -- luacheck: ignore 121
debug.sethook(hook, "", PERIOD)
dofile(client)
report()
