-- Soak test (a script, not a timed test): does a long-running lua-smtp
-- process keep its memory and file descriptors flat?
--
--   lua5.4 bench/soak.lua [phase ...]        from the repository root
--   bash bench/soak.sh                       builds first, bounded by timeout
--
-- Phases (default: many, sendmail, sessions, in this order; many_raw on request):
--   many      one session, SOAK_MESSAGES messages through s:send_many in
--             batches of SOAK_BATCH (composed messages: from/to/subject/text)
--   many_raw  as many, with sendmail's raw message (to compare the two APIs)
--   sendmail  one session, SOAK_MESSAGES raw messages through s:sendmail
--   sessions  SOAK_SESSIONS sessions in a row, one smtp.send each
--
-- It starts Postfix's smtp-sink on 127.0.0.1 (a free port; -u nobody when
-- root; -c so the sink counts what it accepted) and stops it by PID.  After
-- a warm-up (SOAK_WARMUP of each phase, default 5 %) it samples, every
-- SOAK_EVERY messages/sessions (default: a twentieth of the phase), the
-- process's VmRSS (/proc/self/status), the Lua heap after a full GC and
-- the number of open descriptors (/proc/self/fd).  Each phase passes when
--   - every message was accepted (and the sink counted as many),
--   - RSS at the end minus RSS after the warm-up < SOAK_RSS_LIMIT_KB (2048),
--   - the descriptors open after the phase are those open before it.
-- (The Lua heap column creeps by ~0.25 kB a sample: that is the sample
-- tables this script keeps, not the library.)
-- Exit status 0 when every phase passed, 1 otherwise.
--
-- Environment: SOAK_MESSAGES (100000), SOAK_BATCH (1000), SOAK_SESSIONS
-- (5000), SOAK_WARMUP (0.05), SOAK_EVERY, SOAK_RSS_LIMIT_KB (2048),
-- SOAK_SINK (path of smtp-sink), SOAK_CPATH (module path; default
-- ./build/<interpreter>/?.so).

local interpreter = (arg and arg[-1] or "lua5.4"):match("[^/]*$")
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = "./lua/?.lua;./lua/?/init.lua;" .. here .. "/../?.lua;" .. package.path
package.cpath = (os.getenv("SOAK_CPATH") or ("./build/" .. interpreter .. "/?.so")) .. ";" .. package.cpath

local smtp = require "smtp"
local core = require "smtp.core"
local socket = require "socket"
local util = require "spec.support.util"
local has_lfs, lfs = pcall(require, "lfs")

local function env_num(name, default)
  local v = tonumber(os.getenv(name) or "")
  return v or default
end

local MESSAGES = env_num("SOAK_MESSAGES", 100000)
local BATCH = env_num("SOAK_BATCH", 1000)
local SESSIONS = env_num("SOAK_SESSIONS", 5000)
local WARMUP = env_num("SOAK_WARMUP", 0.05)
local RSS_LIMIT = env_num("SOAK_RSS_LIMIT_KB", 2048)
local EVERY = env_num("SOAK_EVERY", nil)

local FROM = "soak@example.org"
local TO = "sink@example.net"
local TEXT = ("Soak test line, plain ASCII, nothing to encode.\n"):rep(8)
local RAW = table.concat({
  "From: Soak <soak@example.org>",
  "To: sink@example.net",
  "Subject: soak",
  "Message-ID: <soak@example.org>",
  "",
  "Line one of the soak message.",
  ".a line that starts with a dot, to be stuffed",
  "Last line.",
  "",
}, "\r\n")

---------------------------------------------------------------------------
-- process figures
---------------------------------------------------------------------------

local read_file = util.read_file

local function rss_kb()
  local s = read_file("/proc/self/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)")) or -1
end

local MYPID = tonumber((read_file("/proc/self/stat") or ""):match("^(%d+)"))

-- Open descriptors of this process: a sorted list of "fd -> target".
local function fd_list()
  local out = {}
  if has_lfs then
    local dirfd_seen = false
    for name in lfs.dir("/proc/self/fd") do
      if name ~= "." and name ~= ".." then
        local attr = lfs.symlinkattributes("/proc/self/fd/" .. name)
        local target = attr and attr.target or "?"
        -- lfs.dir's own handle on /proc/self/fd is not ours to count
        if not dirfd_seen and target:match("^/proc/%d+/fd$") then
          dirfd_seen = true
        else
          out[#out + 1] = name .. " -> " .. target
        end
      end
    end
  else
    -- fallback: ls through a shell; the popen pipe is left out by target
    local p = io.popen("ls -l /proc/" .. MYPID .. "/fd 2>/dev/null")
    local pipe_seen = false
    for line in p:lines() do
      local fd, target = line:match("(%d+) %-> (.*)$")
      if fd then out[#out + 1] = fd .. " -> " .. target end
    end
    p:close()
    -- the last pipe is popen's own (opened for this listing)
    for i = #out, 1, -1 do
      if not pipe_seen and out[i]:match("pipe:") then table.remove(out, i); pipe_seen = true end
    end
  end
  table.sort(out, function(a, b) return tonumber(a:match("^%d+")) < tonumber(b:match("^%d+")) end)
  return out
end

local function fd_count() return #fd_list() end

local function lua_kb()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count")
end

---------------------------------------------------------------------------
-- smtp-sink
---------------------------------------------------------------------------

local sh_quote, alive = util.shell_quote, util.alive

local function find_sink()
  return os.getenv("SOAK_SINK") or util.find_program("smtp-sink", { "/usr/sbin/smtp-sink", "/usr/bin/smtp-sink" })
end

local Sink = {}
Sink.__index = Sink

local function start_sink()
  local path = assert(find_sink(), "smtp-sink not found (apt-get install postfix)")
  local is_root = (read_file("/proc/self/status") or ""):match("\nUid:%s*0%s") ~= nil
  for _ = 1, 5 do
    local port = util.free_port()
    local out = os.tmpname()
    -- "echo $$; exec": the PID we read is smtp-sink's own.  Its stdout
    -- (the -c counter) and stderr go to a file, not to our pipe.
    local cmd = "echo $$; exec " .. sh_quote(path) .. " -c " .. (is_root and "-u nobody " or "")
      .. "127.0.0.1:" .. port .. " 256 >" .. sh_quote(out) .. " 2>&1"
    local h = assert(io.popen(cmd, "r"))
    local pid = tonumber(h:read("*l"))
    local sink = setmetatable({ pid = pid, port = port, out = out, handle = h }, Sink)
    if util.wait_port(port, 5, pid) then return sink end
    io.stderr:write("soak: smtp-sink on port ", port, " did not start: ", read_file(out) or "", "\n")
    sink:stop()
  end
  error("smtp-sink did not start")
end

-- Messages the sink accepted so far (its -c counter: "... mesg=N ...").
-- Only the file's tail is read: the counter is rewritten (after a CR) on
-- every message, so the file grows by megabytes, and reading it whole would
-- itself raise this process's RSS.
function Sink:count()
  local f = io.open(self.out, "rb")
  if not f then return 0 end
  local size = f:seek("end")
  f:seek("set", math.max(0, size - 512))
  local s = f:read("*a") or ""
  f:close()
  local n
  for m in s:gmatch("mesg=(%d+)") do n = m end
  return tonumber(n) or 0
end

function Sink:stop()
  if not self.pid then return end
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  local t0 = socket.gettime()
  while alive(self.pid) and socket.gettime() - t0 < 5 do socket.sleep(0.02) end
  if alive(self.pid) then os.execute("kill -KILL " .. self.pid .. " 2>/dev/null") end
  self.handle:close()        -- reaps it
  os.remove(self.out)
  self.pid = nil
end

---------------------------------------------------------------------------
-- phases
---------------------------------------------------------------------------

local results = {}

local function fmt_kb(kb) return string.format("%d", kb) end

-- Runs one phase: step(i) does unit i (a batch or a message or a session)
-- and returns how many messages it accepted; units total; per = messages
-- per unit.  open()/close() bracket the units (session setup).
local function phase(name, what, units, per, open, step, close, sink)
  local every = EVERY and math.max(1, math.floor(EVERY / per)) or math.max(1, math.floor(units / 20))
  local warm = math.max(1, math.floor(units * WARMUP + 0.5))
  local fds_before = fd_list()
  local sink_before = sink:count()
  collectgarbage("collect")
  local r = { name = name, what = what, samples = {}, errors = 0, first_error = nil,
              rss_start = rss_kb(), fds_before = #fds_before }
  print(string.format("\n== %s: %s", name, what))
  print(string.format("%10s %9s %9s %9s %11s %5s", "messages", "seconds", "msg/s", "RSS kB", "Lua heap kB", "fds"))
  local ctx = open and open() or nil
  local t0 = core.now()
  local sent = 0
  local max_fds = 0
  for i = 1, units do
    local ok_n, err = step(ctx, i)
    sent = sent + ok_n
    if err then
      r.errors = r.errors + 1
      r.first_error = r.first_error or err
    end
    if i == warm or (i > warm and (i - warm) % every == 0) or i == units then
      local s = { n = i * per, t = core.now() - t0, rss = rss_kb(), lua = lua_kb(), fds = fd_count() }
      s.rate = s.n / s.t
      max_fds = math.max(max_fds, s.fds)
      r.samples[#r.samples + 1] = s
      if i == warm then r.warm = s end
      print(string.format("%10d %9.1f %9.0f %9s %11.0f %5d%s", s.n, s.t, s.rate, fmt_kb(s.rss), s.lua, s.fds,
        i == warm and "   <- after warm-up" or ""))
      io.stdout:flush()
    end
  end
  if close then close(ctx) end
  r.seconds = core.now() - t0
  r.sent = sent
  r.expected = units * per
  r.max_fds = max_fds
  local final = r.samples[#r.samples]
  r.final = final
  r.growth = final.rss - r.warm.rss
  local peak = 0
  for _, s in ipairs(r.samples) do if s.rss > peak then peak = s.rss end end
  r.peak = peak
  r.lua_growth = final.lua - r.warm.lua
  -- the sink's counter is written asynchronously: give it a moment
  local t1 = socket.gettime()
  repeat
    r.sink_count = sink:count() - sink_before
    if r.sink_count >= r.expected then break end
    socket.sleep(0.05)
  until socket.gettime() - t1 > 3
  collectgarbage("collect")
  local fds_after = fd_list()
  r.fds_after = #fds_after
  local before_set = {}
  for _, f in ipairs(fds_before) do before_set[f] = true end
  r.leftover = {}
  for _, f in ipairs(fds_after) do
    if not before_set[f] then r.leftover[#r.leftover + 1] = f end
  end
  r.ok_sent = sent == r.expected and r.errors == 0
  r.ok_sink = r.sink_count == r.expected
  r.ok_rss = r.growth < RSS_LIMIT
  r.ok_fds = #r.leftover == 0 and r.fds_after == r.fds_before
  r.ok = r.ok_sent and r.ok_sink and r.ok_rss and r.ok_fds
  print(string.format("%s: %d/%d accepted (%d errors%s), sink counted %d; %.1f s, %.0f msg/s",
    name, sent, r.expected, r.errors, r.first_error and (", first: " .. r.first_error) or "",
    r.sink_count, r.seconds, sent / r.seconds))
  print(string.format("%s: RSS after warm-up %d kB, final %d kB, peak %d kB: growth %+d kB (limit %d) %s",
    name, r.warm.rss, final.rss, peak, r.growth, RSS_LIMIT, r.ok_rss and "ok" or "FAIL"))
  print(string.format("%s: Lua heap after warm-up %.0f kB, final %.0f kB (%+.0f kB)",
    name, r.warm.lua, final.lua, r.lua_growth))
  print(string.format("%s: fds before %d, during at most %d, after %d%s %s", name, r.fds_before,
    max_fds, r.fds_after, #r.leftover > 0 and (" (left open: " .. table.concat(r.leftover, ", ") .. ")") or "",
    r.ok_fds and "ok" or "FAIL"))
  print(string.format("%s: %s", name, r.ok and "PASS" or "FAIL"))
  results[#results + 1] = r
  return r
end

local function connect(sink)
  return assert(smtp.connect{ host = "127.0.0.1", port = sink.port, timeout = 30 })
end

local PHASES = {}

function PHASES.many(sink)
  local units = math.ceil(MESSAGES / BATCH)
  return phase("many", string.format("%d messages over one session, s:send_many in batches of %d",
      units * BATCH, BATCH), units, BATCH,
    function() return { s = connect(sink) } end,
    function(ctx, i)
      local list = {}
      for k = 1, BATCH do
        list[k] = { from = FROM, to = TO, subject = "soak " .. i .. "." .. k, text = TEXT }
      end
      local res = ctx.s:send_many(list)
      local ok, err = 0, nil
      for k = 1, BATCH do
        local r = res[k]
        if r and not r.error and r.accepted and #r.accepted == 1 then ok = ok + 1
        else err = err or (r and r.error or "no result") end
      end
      return ok, err
    end,
    function(ctx) ctx.s:quit() end, sink)
end

-- The same as many, with the raw message of sendmail: compares the two
-- APIs on equal messages (not in the default run).
function PHASES.many_raw(sink)
  local units = math.ceil(MESSAGES / BATCH)
  return phase("many_raw", string.format("%d raw messages over one session, s:send_many in batches of %d",
      units * BATCH, BATCH), units, BATCH,
    function() return { s = connect(sink) } end,
    function(ctx)
      local list = {}
      for k = 1, BATCH do
        list[k] = { envelope = { from = FROM, to = { TO } }, message = RAW }
      end
      local res = ctx.s:send_many(list)
      local ok, err = 0, nil
      for k = 1, BATCH do
        local r = res[k]
        if r and not r.error and r.accepted and #r.accepted == 1 then ok = ok + 1
        else err = err or (r and r.error or "no result") end
      end
      return ok, err
    end,
    function(ctx) ctx.s:quit() end, sink)
end

function PHASES.sendmail(sink)
  return phase("sendmail", string.format("%d raw messages over one session, s:sendmail in a loop", MESSAGES),
    MESSAGES, 1,
    function() return { s = connect(sink) } end,
    function(ctx)
      local res, err = ctx.s:sendmail(FROM, TO, RAW)
      if res then return 1 end
      return 0, err
    end,
    function(ctx) ctx.s:quit() end, sink)
end

function PHASES.sessions(sink)
  return phase("sessions", string.format("%d sessions in a row, one smtp.send each", SESSIONS),
    SESSIONS, 1, nil,
    function(_, i)
      local res, err = smtp.send{ host = "127.0.0.1", port = sink.port, timeout = 30,
        from = FROM, to = TO, subject = "soak session " .. i, text = TEXT }
      if res then return 1 end
      return 0, err
    end, nil, sink)
end

---------------------------------------------------------------------------
-- main
---------------------------------------------------------------------------

local order = {}
for _, a in ipairs(arg or {}) do
  if not PHASES[a] then
    io.stderr:write("soak: unknown phase ", a, " (many, many_raw, sendmail, sessions)\n")
    os.exit(2)
  end
  order[#order + 1] = a
end
if #order == 0 then order = { "many", "sendmail", "sessions" } end

local searchpath = package.searchpath   -- luacheck: ignore 143 (5.2+)
print(string.format("soak: %s, %s, module %s; lfs %s", smtp._VERSION, _VERSION,
  searchpath and searchpath("smtp.core", package.cpath) or "?", has_lfs and "yes" or "no (ls fallback)"))
local fds_start = fd_list()
local sink = start_sink()
print(string.format("soak: smtp-sink pid %d on 127.0.0.1:%d; RSS at start %d kB, %d fds open",
  sink.pid, sink.port, rss_kb(), #fds_start))

local ok_all = true
local t_all = core.now()
for _, name in ipairs(order) do
  local ok, r = pcall(PHASES[name], sink)
  if not ok then
    print(string.format("%s: FAIL (error: %s)", name, tostring(r)))
    ok_all = false
  elseif not r.ok then
    ok_all = false
  end
end
sink:stop()
collectgarbage("collect")
local fds_end = fd_list()
local same = #fds_end == #fds_start
if same then
  for i = 1, #fds_end do if fds_end[i] ~= fds_start[i] then same = false end end
end
print(string.format("\nsoak: %d fds at start, %d at the end (smtp-sink stopped)%s", #fds_start, #fds_end,
  same and "" or ("\n  start: " .. table.concat(fds_start, ", ") .. "\n  end:   " .. table.concat(fds_end, ", "))))
ok_all = ok_all and same

-- one summary table (markdown)
print("\n| phase | messages | accepted | sink | seconds | msg/s | RSS warm-up kB | RSS final kB"
  .. " | growth kB | peak kB | Lua heap kB (warm -> final) | fds before/max/after | result |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for _, r in ipairs(results) do
  print(string.format("| %s | %d | %d | %d | %.1f | %.0f | %d | %d | %+d | %d | %.0f -> %.0f | %d/%d/%d | %s |",
    r.name, r.expected, r.sent, r.sink_count, r.seconds, r.sent / r.seconds, r.warm.rss, r.final.rss,
    r.growth, r.peak, r.warm.lua, r.final.lua, r.fds_before, r.max_fds, r.fds_after, r.ok and "PASS" or "FAIL"))
end
print(string.format("\nsoak: %s in %.0f s", ok_all and "PASS" or "FAIL", core.now() - t_all))
os.exit(ok_all and 0 or 1)
