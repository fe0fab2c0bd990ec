-- make load: the load test (load/loadtest.lua) from the repository root.
--   lua5.4 load/run.lua [N [C [RUNS]]]     RUNS: clean,restart,reset,stall
-- Environment: LOAD_N, LOAD_C, LOAD_WORKERS, LOAD_RUNS. Exits 1 on any
-- violation, on HTTP failures in the clean run, or when a /ping answer took
-- more than 50 ms in any run.
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
-- The workers never block: /ping (no I/O) is answered within 50 ms in
-- every run, faults or not.
local PROBE_LIMIT_MS = 50
for _, r in ipairs(reports) do
  bad = bad + r.violations
  if r.kind == "clean" and (r.gen.failed ~= 0 or r.accepted_once ~= n) then bad = bad + 1 end
  local worst = r.probe.worst or 0
  local within = (r.probe.count or 0) > 0 and r.probe.failures == 0 and worst <= PROBE_LIMIT_MS
  print(string.format("%-8s /ping worst %.1f ms over %d answers: %s", r.kind, worst, r.probe.count or 0,
    within and ("within " .. PROBE_LIMIT_MS .. " ms") or ("NOT within " .. PROBE_LIMIT_MS .. " ms")))
  if not within then bad = bad + 1 end
end
print(bad == 0 and "load test: no violations, /ping within 50 ms" or ("load test: FAILED (" .. bad .. ")"))
os.exit(bad == 0 and 0 or 1)
