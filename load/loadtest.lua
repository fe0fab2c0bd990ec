-- The load test: exact accounting of messages sent through nginx workers
-- (pooled cosocket sessions) into a private Postfix, clean and under
-- faults. Used by load/run.lua (make load) and spec/load_spec.lua (a short
-- run inside make test).
--
--   local loadtest = require "load.loadtest"
--   local ok, why = loadtest.available()
--   local reports = loadtest.run{ n = 20000, c = 200, workers = 4,
--                                 runs = { "clean", "restart", "reset", "stall" },
--                                 print = print }
--   -- one report per run: report.violations == 0 is the goal
--
-- Pieces: spec/support/postfix.lua (Postfix, here delivering each message
-- to a file of one Maildir with virtual(8)), spec/support/nginx.lua with load/nginx.conf.in (several workers,
-- /send and /ping from load/load_handler.lua), load/generator.lua (the
-- HTTP load, its own process), load/probe.lua (the /ping latency, its own
-- process), load/fault_proxy.py (resets or stalls a share of connections).
--
-- Runs:
--   clean    straight into Postfix
--   restart  Postfix is stopped at 30 % of the requests and started again 2 s later
--   reset    through fault_proxy.py --mode reset (2 % of transactions: their
--            connection is reset at a random point, the first MAIL and the
--            end of data's reply among them)
--   stall    through fault_proxy.py --mode stall (1 % of transactions: their
--            connection stalls for 8 s at a random point; the library's
--            timeout is 2 s)
--
-- Accounting: each /send request's result, as the handler logged it (what
-- the library reported: accepted, not_sent, unknown = stage data_end),
-- against the delivered files, matched by the unique Message-ID
-- <run.id@load.lua-smtp.test>. Violations: accepted but not delivered,
-- delivered twice, reported not sent but delivered, no result at all, a
-- delivered message nobody sent.
local socket = require "socket"
local postfix = require "spec.support.postfix"
local nginx = require "spec.support.nginx"
local sutil = require "spec.support.util"

local util = postfix.util
local M = {}

local ROOT = nginx.root

function M.available()
  if not postfix.available() then return false, "needs root, postfix, dovecot-core and openssl" end
  local ok, why = nginx.available()
  if not ok then return false, why end
  if not util.execute("command -v python3 >/dev/null 2>&1") then return false, "needs python3" end
  return true
end

local read_file = sutil.read_file

local function lines(text)
  local out = {}
  for l in (text or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

local function loadavg()
  return ((read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)")) or "?"
end

-- nginx's worker PIDs (the master's children).
local function workers(ngx_srv)
  local master = tonumber((read_file(ngx_srv.prefix .. "/logs/nginx.pid") or ""):match("%d+"))
  if not master then return {} end
  local out = {}
  for _, pid in ipairs(util.descendants({ master })) do
    local stat = read_file("/proc/" .. pid .. "/stat") or ""
    if stat:match("^%d+ %b() %a (%d+)") == tostring(master) then out[#out + 1] = pid end
  end
  return out
end

-- RSS (KiB) and open descriptors of each worker: { {pid, rss, fds}, ... }.
local function worker_usage(ngx_srv)
  local out = {}
  for _, pid in ipairs(workers(ngx_srv)) do
    local status = read_file("/proc/" .. pid .. "/status") or ""
    local fds = util.capture("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l")
    -- utime and stime (fields 14 and 15 of stat, after the command in parentheses)
    local utime, stime = (read_file("/proc/" .. pid .. "/stat") or ""):match("^%d+ %b() %a" .. (" %S+"):rep(10) ..
      " (%d+) (%d+)")
    out[#out + 1] = { pid = pid, rss = tonumber(status:match("VmRSS:%s*(%d+)")) or 0,
                      fds = tonumber(fds:match("%d+")) or 0,
                      ticks = (tonumber(utime) or 0) + (tonumber(stime) or 0) }
  end
  return out
end

-- CPU seconds the workers used between two worker_usage snapshots.
local CLOCK_TICKS = tonumber(util.capture("getconf CLK_TCK 2>/dev/null"):match("%d+")) or 100
local function cpu_seconds(before, after)
  local ticks = 0
  for i, w in ipairs(after) do
    if before[i] and before[i].pid == w.pid then ticks = ticks + w.ticks - before[i].ticks end
  end
  return ticks / CLOCK_TICKS
end

local function usage_text(u)
  local rss, fds = {}, {}
  for i, w in ipairs(u) do
    rss[i] = string.format("%.1f", w.rss / 1024)
    fds[i] = tostring(w.fds)
  end
  return "RSS MiB " .. table.concat(rss, "/") .. ", fds " .. table.concat(fds, "/")
end

-- Messages still in Postfix's queue.
local function queued(pf)
  local dirs = {}
  for _, d in ipairs({ "maildrop", "incoming", "active", "deferred", "hold" }) do
    dirs[#dirs + 1] = util.shell_quote(pf.dir .. "/queue/" .. d)
  end
  -- Postfix marks a complete queue file with the owner's execute bit; a
  -- file cleanup was writing when Postfix stopped stays without it (and
  -- its message was never accepted): not a queued message.
  local out = util.capture("find " .. table.concat(dirs, " ") .. " -type f -perm -u=x 2>/dev/null | wc -l")
  return tonumber(out:match("%d+")) or 0
end

-- Waits until the queue is empty (or timeout): true when it is.
local function drain(pf, timeout)
  local deadline = socket.gettime() + timeout
  local empty_since
  while socket.gettime() < deadline do
    -- (find over a queue of thousands of files costs CPU: not too often)
    if queued(pf) == 0 then
      empty_since = empty_since or socket.gettime()
      if socket.gettime() - empty_since > 1.5 then return true end
      socket.sleep(0.5)
    else
      empty_since = nil
      socket.sleep(2)
    end
  end
  return false
end

-- Delivered copies per Message-ID of this run: { [id] = { queue id of each
-- copy } }, and the count of delivered files of this run whose id is not a
-- number.
local function delivered(pf, run)
  local counts, strays = {}, 0
  local names = util.capture("ls -1 " .. util.shell_quote(pf.maildir) .. " 2>/dev/null")
  local pattern = "\n[Mm][Ee][Ss][Ss][Aa][Gg][Ee]%-[Ii][Dd]:%s*<" .. run:gsub("%p", "%%%0") ..
    "%.([^@>]+)@load%.lua%-smtp%.test>"
  for name in names:gmatch("[^\n]+") do
    if name:sub(1, 1) ~= "." then
      local text = read_file(pf.maildir .. "/" .. name) or ""
      local head = text:sub(1, (text:find("\n\n", 1, true) or #text))
      local id = head:match(pattern)
      if id then
        local n = tonumber(id)
        if n then
          -- Postfix's queue ID, from its Received: field: two copies from
          -- one queue file are Postfix delivering twice, not two submissions
          local qid = head:match("\n?Received: [^\n]*\n?[^\n]-with %S+ id (%w+)") or
            head:match("with E?SMTPS?A? id (%w+)")
          counts[n] = counts[n] or {}
          table.insert(counts[n], qid or "?")
        else
          strays = strays + 1
        end
      end
    end
  end
  return counts, strays
end

-- The handler's records of this run: { [id] = { outcome, stage, kind, reused, retried, ms } }.
local function records(ngx_srv, run)
  local out, dup = {}, 0
  for _, l in ipairs(lines(read_file(ngx_srv.prefix .. "/logs/results.log"))) do
    local r, id, outcome, stage, kind, reused, retried, ms =
      l:match("^(%S+) (%d+) (%S+) (%S+) (%S+) (%d) (%d) (%d+)$")
    if r == run then
      id = tonumber(id)
      if out[id] then dup = dup + 1 end
      out[id] = { outcome = outcome, stage = stage, kind = kind, reused = reused == "1",
                  retried = retried == "1", ms = tonumber(ms) }
    end
  end
  return out, dup
end

local function spawn(argv, out_file)
  return util.spawn(argv, out_file)
end

local function stop_proc(proc, sig)
  if proc and proc.handle then
    util.execute("kill -" .. (sig or "TERM") .. " " .. proc.pid .. " 2>/dev/null")
    util.reap(proc)
  end
end

local function wait_output(file, pattern, timeout)
  return util.poll(timeout, function() return (read_file(file) or ""):match(pattern) end)
end

-- Postfix starts an smtpd process per new connection and keeps it idle for
-- the next one (max_idle, 100 s); but its master starts new ones slowly
-- when a burst finds every process busy (a few per second here): new
-- connections then wait in the listen queue, past a 30 s timeout. Before a
-- run, c connections are held open until all have greeted, then quit, as
-- on a server that has been serving that many clients. Returns how many
-- greeted.
local function warm_up(port, c)
  local pending, greeted, held = {}, 0, {}
  for _ = 1, c do
    local s = socket.tcp()
    s:settimeout(5)
    if s:connect("127.0.0.1", port) then
      s:settimeout(0)
      pending[s] = ""
    else
      s:close()
    end
  end
  local deadline = socket.gettime() + 120
  while next(pending) and socket.gettime() < deadline do
    local list = {}
    for s in pairs(pending) do list[#list + 1] = s end
    local readable = socket.select(list, nil, 1)
    for _, s in ipairs(readable or {}) do
      local data, err, partial = s:receive(4096)
      local buf = pending[s] .. (data or partial or "")
      if buf:find("\n") or err == "closed" then
        -- held open until every one has greeted: c processes, not fewer
        -- serving the connections one after another
        if buf:match("^220") then greeted = greeted + 1 held[#held + 1] = s else s:close() end
        pending[s] = nil
      else
        pending[s] = buf
      end
    end
  end
  for s in pairs(pending) do s:close() end
  for _, s in ipairs(held) do s:settimeout(1) s:send("QUIT\r\n") end
  for _, s in ipairs(held) do s:receive("*l") s:close() end
  return greeted
end

-- The accounting of one run: a report table, and its text.
local function account(run, n, recs, counts, strays, gen)
  local a = {
    run = run, n = n,
    accepted_once = 0, not_sent_none = 0,
    unknown = { [0] = 0, [1] = 0 },
    accepted_missing = 0, accepted_dup = 0, not_sent_delivered = 0, unknown_dup = 0,
    no_record = 0, no_record_delivered = 0, strays = strays, redelivered = 0,
    retried_stale = 0, retried_by = {}, reused = 0, not_sent_by = {}, examples = {},
  }
  local function example(what, id, r)
    if #a.examples < 10 then
      a.examples[#a.examples + 1] = string.format("%s: id %d %s", what, id,
        r and (r.outcome .. " stage=" .. r.stage .. " kind=" .. r.kind) or "no record")
    end
  end
  -- Several copies of one queue file: Postfix delivered it again (its
  -- delivery was cut off by the stop); the library submitted it once.
  local function one_submission(copies)
    for _, q in ipairs(copies) do
      if q == "?" or q ~= copies[1] then return false end
    end
    return true
  end
  for id = 1, n do
    local r, copies = recs[id], counts[id] or {}
    local d = #copies
    if d > 1 and r and r.outcome ~= "not_sent" and one_submission(copies) then
      a.redelivered = a.redelivered + 1
      d = 1
    end
    if not r then
      a.no_record = a.no_record + 1
      if d > 0 then a.no_record_delivered = a.no_record_delivered + 1 end
      example("no record", id)
    else
      if r.retried then
        a.retried_stale = a.retried_stale + 1
        -- after the retry: accepted, not_sent (the fresh connection failed
        -- too: the first failure stands, with retry_error) or unknown
        a.retried_by[r.outcome] = (a.retried_by[r.outcome] or 0) + 1
      end
      if r.reused then a.reused = a.reused + 1 end
      if r.outcome == "accepted" then
        if d == 1 then a.accepted_once = a.accepted_once + 1
        elseif d == 0 then a.accepted_missing = a.accepted_missing + 1 example("accepted, missing", id, r)
        else a.accepted_dup = a.accepted_dup + 1 example("accepted, delivered " .. d .. "x", id, r) end
      elseif r.outcome == "not_sent" then
        local key = r.stage .. "/" .. r.kind
        a.not_sent_by[key] = (a.not_sent_by[key] or 0) + 1
        if d == 0 then a.not_sent_none = a.not_sent_none + 1
        else a.not_sent_delivered = a.not_sent_delivered + 1 example("not sent, delivered", id, r) end
      else
        if d <= 1 then a.unknown[d] = a.unknown[d] + 1
        else a.unknown_dup = a.unknown_dup + 1 example("unknown, delivered " .. d .. "x", id, r) end
      end
    end
  end
  for id in pairs(counts) do
    if id < 1 or id > n then a.strays = a.strays + #counts[id] end
  end
  a.violations = a.accepted_missing + a.accepted_dup + a.not_sent_delivered + a.unknown_dup +
    a.no_record + a.strays
  a.gen = gen
  local by = {}
  for k, v in pairs(a.not_sent_by) do by[#by + 1] = k .. " " .. v end
  table.sort(by)
  local t = {
    string.format("  requests %d (HTTP 200: %s, HTTP failures: %s)", n, tostring(gen.ok), tostring(gen.failed)),
    string.format("  accepted and delivered once          %6d", a.accepted_once),
    string.format("  not sent and not delivered           %6d   (%s)", a.not_sent_none,
      #by > 0 and table.concat(by, ", ") or "none"),
    string.format("  unknown (data_end): delivered once   %6d", a.unknown[1]),
    string.format("  unknown (data_end): not delivered    %6d", a.unknown[0]),
    string.format("  retried on a fresh connection (stale pooled one) %d (then accepted %d, not sent %d," ..
      " unknown %d); sessions from the pool %d", a.retried_stale, a.retried_by.accepted or 0,
      a.retried_by.not_sent or 0, a.retried_by.unknown or 0, a.reused),
    string.format("  one queue file delivered twice by Postfix (one submission, counted once above) %d",
      a.redelivered),
    string.format("  VIOLATIONS %d: accepted but missing %d, accepted but duplicated %d," ..
      " not sent but delivered %d, unknown delivered twice %d, no record %d (of them delivered %d)," ..
      " delivered without a request %d", a.violations, a.accepted_missing, a.accepted_dup,
      a.not_sent_delivered, a.unknown_dup, a.no_record, a.no_record_delivered, a.strays),
  }
  for _, e in ipairs(a.examples) do t[#t + 1] = "    " .. e end
  return a, table.concat(t, "\n")
end

local function parse_gen(out)
  local gen = { failures = {} }
  local n, ok, failed, secs = out:match("DONE (%d+) (%d+) (%d+) ([%d%.]+)")
  gen.n, gen.ok, gen.failed, gen.seconds = tonumber(n), tonumber(ok), tonumber(failed), tonumber(secs)
  for l in out:gmatch("FAILED ([^\n]+)") do
    if #gen.failures < 5 then gen.failures[#gen.failures + 1] = l end
  end
  return gen
end

-- One run. env: { pf, ngx, opts, say, renice }.
local function run_one(env, kind)
  local pf, ngx_srv, opts, say = env.pf, env.ngx, env.opts, env.say
  local n, c = opts.n, opts.c
  local tag = string.format("%s%d", kind, os.time() % 100000)
  local tmp = util.mkdtemp("lua-smtp-load")
  local port, timeout = pf.ports.plain, opts.timeout or 30
  local proxy
  if kind == "reset" or kind == "stall" then
    local argv = { "python3", ROOT .. "/load/fault_proxy.py", "--target", tostring(pf.ports.plain),
      "--mode", kind, "--share", tostring(kind == "reset" and (opts.reset_share or 0.02) or (opts.stall_share or 0.01)),
      "--stall", "8", "--seed", tostring(os.time()) }
    table.insert(argv, 1, "nice")
    proxy = spawn(argv, tmp .. "/proxy.out")
    port = tonumber(wait_output(tmp .. "/proxy.out", "PORT (%d+)\n", 10))
    assert(port, "fault_proxy.py did not start: " .. tostring(read_file(tmp .. "/proxy.out")))
    if kind == "stall" then timeout = 2 end
  end
  local w0 = socket.gettime()
  local greeted = warm_up(pf.ports.plain, c)
  say(string.format("  (warm-up: %d of %d new connections greeted by Postfix in %.1f s)", greeted, c,
    socket.gettime() - w0))
  local before = worker_usage(ngx_srv)
  local load_before = loadavg()
  local stop_file = tmp .. "/stop"
  local probe = spawn({ "nice", "-n", "-10", opts.lua or "lua5.4", ROOT .. "/load/probe.lua",
    tostring(ngx_srv.port), stop_file }, tmp .. "/probe.out")
  local query = string.format("run=%s&port=%d&timeout=%s&pool=%d", tag, port, tostring(timeout), opts.pool or 100)
  local progress = tmp .. "/progress"
  local t0 = socket.gettime()
  local gen_proc = spawn({ "nice", opts.lua or "lua5.4", ROOT .. "/load/generator.lua", tostring(ngx_srv.port),
    tostring(n), tostring(c), query, progress }, tmp .. "/gen.out")
  local restarted
  while util.alive(gen_proc.pid) do
    if kind == "restart" and not restarted then
      local done = tonumber((read_file(progress) or ""):match("%d+")) or 0
      if done >= n * 0.3 then
        restarted = true
        local r0 = socket.gettime()
        local up = pf:restart_postfix(2)
        env.renice()
        say(string.format("  (Postfix stopped after %d requests, started again: %s, %.1f s)", done,
          tostring(up), socket.gettime() - r0))
      end
    end
    socket.sleep(0.2)
  end
  util.reap(gen_proc)
  local elapsed = socket.gettime() - t0
  local gen = parse_gen(read_file(tmp .. "/gen.out") or "")
  local after = worker_usage(ngx_srv)
  util.write_file(stop_file, "")
  util.poll(10, function() return not util.alive(probe.pid) or nil end)
  util.reap(probe)
  local probe_line = (read_file(tmp .. "/probe.out") or ""):match("PROBE ([^\n]+)") or "0 0 0 0 0"
  local pc, worst, p99, over, pfail = probe_line:match("(%d+) ([%d%.]+) ([%d%.]+) (%d+) (%d+)")
  local proxy_text, injected
  if proxy then
    stop_proc(proxy, "TERM")
    local out = read_file(tmp .. "/proxy.out") or ""
    local faults = {}
    injected = 0
    for p, k in out:gmatch("FAULT (%S+) (%d+)") do
      faults[#faults + 1] = p .. " " .. k
      injected = injected + tonumber(k)
    end
    proxy_text = "faults injected: " .. table.concat(faults, ", ") .. "; connections " ..
      tostring(out:match("CONNECTIONS (%d+)"))
  end
  local drained = drain(pf, opts.drain_timeout or math.max(60, n / 20))
  socket.sleep(1.5)   -- the access log is flushed every second
  local recs, dup_records = records(ngx_srv, tag)
  local counts, strays = delivered(pf, tag)
  local a, text = account(tag, n, recs, counts, strays, gen)
  a.kind, a.elapsed, a.throughput = kind, elapsed, n / elapsed
  a.probe = { count = tonumber(pc), worst = tonumber(worst), p99 = tonumber(p99), over50 = tonumber(over),
              failures = tonumber(pfail) }
  a.before, a.after, a.drained, a.dup_records = before, after, drained, dup_records
  a.injected = injected
  local out = {
    string.format("== %s: %d requests at %d concurrent, %d nginx workers, load average %s -> %s",
      kind, n, c, opts.workers, load_before, loadavg()),
    text,
    string.format("  throughput %.0f requests/s (%.1f s)%s", a.throughput, elapsed,
      drained and "" or "; Postfix's queue did NOT drain"),
    "  workers before: " .. usage_text(before) .. "; after: " .. usage_text(after),
    string.format("  workers' CPU time: %.0f us per request (user + system, all workers)",
      cpu_seconds(before, after) / n * 1e6),
    string.format("  /ping probe: %d answers, worst %.1f ms, p99 %.1f ms, over 50 ms %d, failed %d",
      a.probe.count or 0, a.probe.worst or 0, a.probe.p99 or 0, a.probe.over50 or 0, a.probe.failures or 0),
  }
  if proxy_text then out[#out + 1] = "  " .. proxy_text end
  for _, f in ipairs(gen.failures) do out[#out + 1] = "  HTTP failure: " .. f end
  a.text = table.concat(out, "\n")
  say(a.text)
  pf:clear()
  util.execute("rm -rf " .. util.shell_quote(tmp))
  return a
end

-- opts: n, c, workers, runs, pool (pool_size), print, lua.
function M.run(opts)
  opts = opts or {}
  opts.n, opts.c, opts.workers = opts.n or 20000, opts.c or 200, opts.workers or 4
  local say = opts.print or print
  -- Postfix's virtual(8) delivers each message as a file of one Maildir
  -- (VMAIL/sink/new), in its own process, with no program run per message
  -- (the specs' capture pipe runs a shell per message: too slow for 20,000).
  local vmail = util.mkdtemp("lua-smtp-vmail")
  util.execute("chown nobody:nogroup " .. util.shell_quote(vmail) .. " && chmod 755 " .. util.shell_quote(vmail))
  local pf = postfix.start{ main = {
    default_process_limit = 600, queue_run_delay = "1s", minimal_backoff_time = "1s",
    maximal_backoff_time = "2s", smtpd_client_connection_count_limit = 0,
    virtual_transport = "virtual", virtual_mailbox_domains = "example.net",
    virtual_mailbox_base = vmail, virtual_mailbox_maps = "static:sink/",
    virtual_uid_maps = "static:65534", virtual_gid_maps = "static:65534",
  } }
  pf.maildir = vmail .. "/sink/new"
  pf.clear = function() util.execute("find " .. util.shell_quote(vmail) .. " -type f -delete") end
  local ok, ngx_srv = pcall(nginx.start, { conf = ROOT .. "/load/nginx.conf.in",
    vars = { WORKERS = opts.workers } })
  if not ok then
    pf:stop()
    util.execute("rm -rf " .. util.shell_quote(vmail))
    error(ngx_srv, 0)
  end
  -- One machine stands in for three. The application host (nginx's
  -- workers and the /ping probe) runs at nice -10; Postfix (and the
  -- children it starts), the fault proxy and the load generator stand
  -- for other machines and run at nice 10. Priority cannot hide a
  -- blocked worker: one waiting in a system call answers /ping late
  -- whatever its priority; it only keeps 2 CPUs shared with a few hundred
  -- Postfix processes from being counted as the workers' own latency.
  local function renice()
    local pids = pf:pids()
    if #pids > 0 then util.execute("renice -n 10 -p " .. table.concat(pids, " ") .. " >/dev/null 2>&1") end
  end
  renice()
  local wpids = workers(ngx_srv)
  if #wpids > 0 then util.execute("renice -n -10 -p " .. table.concat(wpids, " ") .. " >/dev/null 2>&1") end
  local reports = {}
  local ran, err = pcall(function()
    for _, kind in ipairs(opts.runs or { "clean" }) do
      local seen = #lines(pf:log())
      reports[#reports + 1] = run_one({ pf = pf, ngx = ngx_srv, opts = opts, say = say, renice = renice }, kind)
      -- Postfix's warnings during the run, counted by kind
      local kinds, order = {}, {}
      local all = lines(pf:log())
      for i = seen + 1, #all do
        local w = all[i]:match("(warning: .*)$") or all[i]:match("(fatal: .*)$") or all[i]:match("(panic: .*)$")
        if w then
          local key = w:gsub("%d+", "N"):sub(1, 100)
          if not kinds[key] then order[#order + 1] = key end
          kinds[key] = (kinds[key] or 0) + 1
        end
      end
      for j = 1, math.min(#order, 6) do say(string.format("  Postfix %dx %s", kinds[order[j]], order[j])) end
    end
  end)
  local errlog = ngx_srv:error_log()
  local keep = os.getenv("LOAD_KEEP_LOGS")   -- a directory for Postfix's and nginx's logs
  if keep and keep ~= "" then
    util.execute("mkdir -p " .. util.shell_quote(keep) .. " && cp " .. util.shell_quote(pf.dir .. "/maillog") .. " " ..
      util.shell_quote(ngx_srv.prefix .. "/logs/results.log") .. " " ..
      util.shell_quote(ngx_srv.prefix .. "/logs/error.log") .. " " .. util.shell_quote(keep) .. "/")
  end
  ngx_srv:stop()
  pf:stop()
  util.execute("rm -rf " .. util.shell_quote(vmail))
  if not ran then error(err, 0) end
  local alerts = {}
  for l in errlog:gmatch("[^\n]+") do
    if l:find("%[alert%]") or l:find("%[crit%]") or l:find("%[emerg%]") then
      alerts[#alerts + 1] = l
    end
  end
  reports.alerts = alerts
  if #alerts > 0 then say("nginx error log alerts:\n" .. table.concat(alerts, "\n", 1, math.min(#alerts, 10))) end
  return reports
end

return M
