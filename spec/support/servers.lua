-- Start and stop helper server processes for busted specs.
--
--   local servers = require "spec.support.servers"
--   local srv = servers.fake{ steps = { ... } }   -- spec/support/fake_server.lua
--   local dbg = servers.debug_server{ max_messages = 1 }  -- bin/smtp-debug-server
--   local sink = servers.sink{ "-d", dir .. "/%M." }      -- Postfix smtp-sink
--   ... srv.port, srv.pid, srv:received(), dbg:output(), x:wait(t), x:stop()
--   servers.steps(servers.say("220 hi\r\n"), servers.hear("EHLO x"), ...)
--   servers.recorder(), servers.find_line(lines, text, plain): transcripts
--
-- Each process is started through io.popen as "echo $$; exec SERVER >file",
-- so the PID we hold is the server itself and this Lua process is its
-- parent.  The popen handle is kept open until the server has exited and is
-- closed (which reaps it) only then, so no zombie is left behind even where
-- PID 1 does not reap orphans.  Inherited file descriptors above 2 (e.g.
-- client sockets of the spec) are closed in the child when bash and /proc
-- are available, so servers never keep a spec's connection open.
--
-- Works with Lua 5.1 .. 5.4.

local util = require "spec.support.util"

local M = {}

local START_TIMEOUT = 5    -- seconds to wait for a server to come up

---------------------------------------------------------------------------
-- small helpers (spec/support/util.lua)
---------------------------------------------------------------------------

local function read_file(path) return util.read_file(path) or "" end
local tmpname = os.tmpname   -- creates the file on POSIX systems

M.root = util.root

local execute, poll, alive = util.execute, util.poll, util.alive

-- true when started servers do not inherit the spec's descriptors
M.closes_fds = util.spawn_closes_fds()

M.sink_path = util.find_program("smtp-sink", { "/usr/sbin/smtp-sink" })
M.available = { sink = M.sink_path ~= nil }

-- Is the process with this PID still running?  A zombie counts as dead.
M.alive = alive

---------------------------------------------------------------------------
-- process objects
---------------------------------------------------------------------------

local Proc = {}
Proc.__index = Proc

local live = {}   -- every process started and not yet stopped

-- Starts argv (an array of words) with stdout/stderr to the given files.
-- Returns a Proc with pid.
local function spawn(argv, stdout_file, stderr_file)
  local handle, pid, cmd = util.spawn(argv, { stdout = stdout_file, stderr = stderr_file })
  local self = setmetatable({
    pid = pid, handle = handle, stdout_file = stdout_file, stderr_file = stderr_file,
    temp_files = { stdout_file, stderr_file }, command = cmd,
  }, Proc)
  live[self] = true
  return self
end

-- For the helpers of other servers (spec/support/proxies.lua).
M.spawn = spawn

-- Closing the popen handle waits for the process: only do it once it died.
function Proc:_reap()
  if self.handle then
    local h = self.handle
    self.handle = nil
    h:close()
  end
  live[self] = nil
end

function Proc:alive()
  if not self.handle then return false end
  return alive(self.pid)
end

-- Waits (bounded, default 5 s) for the process to exit; true if it did.
function Proc:wait(timeout)
  if not self.handle then return true end
  local gone = poll(timeout or 5, function() return (not alive(self.pid)) or nil end)
  if gone then
    self:_reap()
    return true
  end
  return false
end

-- TERM, then KILL after 1 s; reaps the process and removes temp files.
-- Safe to call more than once.
function Proc:stop()
  if self.handle then
    if alive(self.pid) then
      execute("kill -TERM " .. self.pid .. " 2>/dev/null")
      if not poll(1, function() return (not alive(self.pid)) or nil end) then
        execute("kill -KILL " .. self.pid .. " 2>/dev/null")
        poll(5, function() return (not alive(self.pid)) or nil end)
      end
    end
    self:_reap()
  end
  if self.temp_files then
    for _, f in ipairs(self.temp_files) do os.remove(f) end
    self.temp_files = nil
  end
  return true
end

-- What the process wrote on stdout / stderr so far.
function Proc:output()
  if not self.stdout_file then return "" end
  return read_file(self.stdout_file)
end

function Proc:errors()
  if not self.stderr_file then return "" end
  return read_file(self.stderr_file)
end

-- The fake server's record of everything the clients sent.
function Proc:received()
  if not self.record_file then return "" end
  return read_file(self.record_file)
end

-- Waits for a pattern to appear in the output file; returns the capture.
function Proc:_wait_output(pattern, timeout)
  return util.poll_alive(timeout or START_TIMEOUT, self.pid, function() return self:output():match(pattern) end)
end

-- Waits for the port the process prints (pattern captures it), sets
-- self.port and returns self; stops it and raises when it does not come up.
function Proc:_port_from_output(pattern, what)
  local port = self:_wait_output(pattern)
  if not port then
    local err = self:errors()
    self:stop()
    error(what .. " did not start: " .. err)
  end
  self.port = tonumber(port)
  return self
end

-- Stops every process started through this module and not yet stopped.
function M.stop_all()
  util.stop_all(live)
end

---------------------------------------------------------------------------
-- script serialisation
---------------------------------------------------------------------------

local function serialise(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "string" then
    return string.format("%q", v)
  elseif t == "number" then
    if v == math.floor(v) and v >= -2^53 and v <= 2^53 then
      return string.format("%d", v)
    end
    return string.format("%.17g", v)
  elseif t == "boolean" or t == "nil" then
    return tostring(v)
  elseif t == "table" then
    local inner = indent .. "  "
    local parts = {}
    local n = #v
    for i = 1, n do parts[#parts + 1] = inner .. serialise(v[i], inner) end
    local keys = {}
    for k in pairs(v) do
      if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then
        keys[#keys + 1] = k
      end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      parts[#parts + 1] = inner .. "[" .. serialise(k, inner) .. "] = " .. serialise(v[k], inner)
    end
    if #parts == 0 then return "{}" end
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
  end
  error("cannot serialise a " .. t)
end

M.serialise = serialise

---------------------------------------------------------------------------
-- building fake-server scripts, reading transcripts
---------------------------------------------------------------------------

-- s with every Lua pattern magic character escaped.
function M.literal(s) return (s:gsub("%p", "%%%0")) end

-- A Lua pattern matching exactly this line (given with or without CRLF).
function M.exact(line)
  return "^" .. M.literal((line:gsub("\r\n$", ""))) .. "$"
end

-- Script steps: send bytes; expect exactly this command line.
function M.say(bytes) return { send = bytes } end
function M.hear(line) return { expect = M.exact(line) } end

-- The server's EHLO reply step: "250-fake.test", then caps (a list), the
-- last with "250 ".
function M.ehlo_reply(caps)
  local lines = { "fake.test" }
  for _, c in ipairs(caps) do lines[#lines + 1] = c end
  local out = {}
  for i, l in ipairs(lines) do out[i] = "250" .. (i < #lines and "-" or " ") .. l .. "\r\n" end
  return M.say(table.concat(out))
end

-- Steps, or lists of steps, flattened into one step list.
function M.steps(...)
  local out = {}
  for _, item in ipairs({ ... }) do
    if item[1] ~= nil and type(item[1]) == "table" then
      for _, st in ipairs(item) do out[#out + 1] = st end
    else
      out[#out + 1] = item
    end
  end
  return out
end

-- A collector for the `debug` option: the list of lines "kind: text" and
-- the function to pass as debug.
function M.recorder()
  local lines = {}
  return lines, function(kind, text) lines[#lines + 1] = kind .. ": " .. text end
end

-- The index and text of the first line matching pattern (plain: a plain
-- substring), or nil.
function M.find_line(lines, pattern, plain)
  for i, l in ipairs(lines) do
    if l:find(pattern, 1, plain) then return i, l end
  end
  return nil
end

-- How a recorded transcript sent its messages: the number of BDAT ...
-- LAST commands and of DATA commands.
function M.last_chunks_and_data(lines)
  local last, data = 0, 0
  for _, l in ipairs(lines) do
    if l:find("^send: 'BDAT %d+ LAST") then last = last + 1 end
    if l:find("^send: 'DATA\\r\\n'") then data = data + 1 end
  end
  return last, data
end

-- Whether a recorded transcript shows pipelining: MAIL and RCPT written
-- before the reply to MAIL, and (after a BDAT ... LAST, when there is a
-- next transaction) the next MAIL before the reply to that BDAT.
function M.pipelined(lines)
  local function written_before_reply(from, pattern)
    for i = from + 1, #lines do
      if lines[i]:find("^reply: ") then return false end
      if lines[i]:find(pattern) then return true end
    end
    return false
  end
  local mail = M.find_line(lines, "^send: 'MAIL FROM:")
  if not mail or not written_before_reply(mail, "^send: 'RCPT TO:") then return false end
  local last = M.find_line(lines, "^send: 'BDAT %d+ LAST")
  if not last then return true end
  for i = last + 1, #lines do
    if lines[i]:find("^send: 'MAIL FROM:") then return written_before_reply(last, "^send: 'MAIL FROM:") end
  end
  return true
end

---------------------------------------------------------------------------
-- public constructors
---------------------------------------------------------------------------

M.free_port = util.free_port

local function lua_cmd()
  return os.getenv("LUA_SERVER") or "lua5.4"
end

-- servers.fake(script_table_or_source) -> object with port, pid
function M.fake(script)
  local source
  if type(script) == "table" then
    source = "return " .. serialise(script) .. "\n"
  else
    source = assert(script, "script expected")
  end
  local script_file, record_file = tmpname(), tmpname()
  util.write_file(script_file, source)
  util.write_file(record_file, "")
  local proc = spawn({ lua_cmd(), M.root .. "/spec/support/fake_server.lua", script_file, record_file },
    tmpname(), tmpname())
  proc.record_file = record_file
  proc.temp_files[#proc.temp_files + 1] = script_file
  proc.temp_files[#proc.temp_files + 1] = record_file
  return proc:_port_from_output("PORT (%d+)\n", "fake server")
end

-- servers.debug_server{ max_messages = N, quiet = bool, port = N, args = {...} }
function M.debug_server(opts)
  opts = opts or {}
  local argv = { lua_cmd(), M.root .. "/bin/smtp-debug-server", "--port", tostring(opts.port or 0) }
  if opts.max_messages then
    argv[#argv + 1] = "--max-messages"
    argv[#argv + 1] = tostring(opts.max_messages)
  end
  if opts.quiet then argv[#argv + 1] = "--quiet" end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local proc = spawn(argv, tmpname(), tmpname())
  return proc:_port_from_output("^listening on [^\n]*:(%d+)\n", "smtp-debug-server")
end

local is_root = util.is_root

-- servers.sink{ ...extra smtp-sink flags } -> object with port, pid
function M.sink(flags)
  if not M.sink_path then error("smtp-sink is not available") end
  flags = flags or {}
  local last_err = ""
  for _ = 1, 5 do
    local port = M.free_port()
    local argv = { M.sink_path }
    if is_root() then
      argv[#argv + 1] = "-u"
      argv[#argv + 1] = "nobody"
    end
    for _, f in ipairs(flags) do argv[#argv + 1] = f end
    argv[#argv + 1] = "127.0.0.1:" .. port
    argv[#argv + 1] = "64"
    local proc = spawn(argv, tmpname(), tmpname())
    local up = util.wait_port(port, START_TIMEOUT, proc.pid)
    if up then
      proc.port = port
      return proc
    end
    last_err = proc:errors()
    proc:stop()
  end
  error("smtp-sink did not start: " .. last_err)
end

-- smtp-sink listening on a Unix-domain socket (flags before the address,
-- e.g. { "-L" } for LMTP); the object's .path is the socket.
function M.sink_unix(flags)
  if not M.sink_path then error("smtp-sink is not available") end
  local path = tmpname() .. ".sock"
  os.remove(path)
  local argv = { M.sink_path }
  if is_root() then
    argv[#argv + 1] = "-u"
    argv[#argv + 1] = "nobody"
  end
  for _, f in ipairs(flags or {}) do argv[#argv + 1] = f end
  argv[#argv + 1] = "unix:" .. path
  argv[#argv + 1] = "16"
  local proc = spawn(argv, tmpname(), tmpname())
  local up = util.poll_alive(START_TIMEOUT, proc.pid, function()
    return execute("test -S " .. util.shell_quote(path))
  end)
  if not up then
    local err = proc:errors()
    proc:stop()
    error("smtp-sink did not start on " .. path .. ": " .. err)
  end
  proc.path = path
  return proc
end

return M
