-- make load: the load test (load/loadtest.lua) from the repository root.
--   lua5.4 load/run.lua [N [C [RUNS]]]     RUNS: clean,restart,reset,stall
-- Environment: LOAD_N, LOAD_C, LOAD_WORKERS, LOAD_RUNS. Exits 1 on any
-- violation or when a run had HTTP failures in the clean run.
package.path = "./lua/?.lua;./lua/?/init.lua;./?.lua;" .. package.path
package.cpath = "./build/lua5.4/?.so;" .. package.cpath

local loadtest = require "load.loadtest"

local ok, why = loadtest.available()
if not ok then
  io.stderr:write("load test skipped: ", tostring(why), "\n")
  os.exit(0)
end

local function list(s)
  local t = {}
  for w in s:gmatch("[^,%s]+") do t[#t + 1] = w end
  return t
end

local n = tonumber(arg[1] or os.getenv("LOAD_N") or "20000")
local c = tonumber(arg[2] or os.getenv("LOAD_C") or "200")
local runs = list(arg[3] or os.getenv("LOAD_RUNS") or "clean,restart,reset,stall")
local workers = tonumber(os.getenv("LOAD_WORKERS") or "4")

local reports = loadtest.run{ n = n, c = c, workers = workers, runs = runs,
  print = function(s) io.write(s, "\n") io.flush() end }
local bad = 0
for _, r in ipairs(reports) do
  bad = bad + r.violations
  if r.kind == "clean" and (r.gen.failed ~= 0 or r.accepted_once ~= n) then bad = bad + 1 end
end
print(bad == 0 and "load test: no violations" or ("load test: FAILED (" .. bad .. ")"))
os.exit(bad == 0 and 0 or 1)
