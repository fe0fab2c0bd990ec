-- The responsiveness probe of the load test, its own process:
--   lua5.4 load/probe.lua NGINX_PORT STOP_FILE [INTERVAL]
-- Every INTERVAL seconds (default 0.02) a new connection asks /ping
-- (HTTP/1.0) and times the answer, until STOP_FILE exists; then prints
-- "PROBE count worst_ms p99_ms over_50ms failures".
local socket = require "socket"

local port, stop_file, interval = tonumber(arg[1]), arg[2], tonumber(arg[3] or "0.02")
local times, failures = {}, 0

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

while not exists(stop_file) do
  local t0 = socket.gettime()
  local s = socket.tcp()
  s:settimeout(5)
  local okc = s:connect("127.0.0.1", port)
  local body
  if okc then
    s:send("GET /ping HTTP/1.0\r\nHost: probe\r\n\r\n")
    body = s:receive("*a")
  end
  s:close()
  if body and body:find("pong", 1, true) then
    times[#times + 1] = (socket.gettime() - t0) * 1000
  else
    failures = failures + 1
  end
  socket.sleep(interval)
end
table.sort(times)
local over = 0
for _, t in ipairs(times) do if t > 50 then over = over + 1 end end
local p99 = times[math.max(1, math.ceil(#times * 0.99))] or 0
print(string.format("PROBE %d %.1f %.1f %d %d", #times, times[#times] or 0, p99, over, failures))
