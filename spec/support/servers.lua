-- Start and stop helper server processes for busted specs.
--
--   local servers = require "spec.support.servers"
--   local srv = servers.fake{ steps = { ... } }   -- spec/support/fake_server.lua
--   local dbg = servers.debug_server{ max_messages = 1 }  -- bin/smtp-debug-server
--   local sink = servers.sink{ "-d", dir .. "/%M." }      -- Postfix smtp-sink
--   ... srv.port, srv.pid, srv:received(), dbg:output(), x:wait(t), x:stop()
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

local socket = require "socket"

local M = {}

local POLL = 0.02          -- seconds between polls
local START_TIMEOUT = 5    -- seconds to wait for a server to come up

---------------------------------------------------------------------------
-- small helpers
---------------------------------------------------------------------------

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute result as a boolean, for Lua 5.1 (number) and 5.2+ (true/nil)
local function execute(cmd)
  local a, _, c = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true and (c == nil or c == 0)
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a") or ""
  f:close()
  return s
end

local function write_file(path, content)
  local f = assert(io.open(path, "wb"))
  assert(f:write(content))
  f:close()
end

local function tmpname()
  local name = os.tmpname()   -- creates the file on POSIX systems
  return name
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Repository root, from this file's location (spec/support/servers.lua).
local function repo_root()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    local dir = src:sub(2):match("^(.*)[/\\]spec[/\\]support[/\\][^/\\]*$")
    if dir and dir ~= "" then return dir end
    if src:sub(2):match("^spec[/\\]support[/\\]") then return "." end
  end
  return "."
end

M.root = repo_root()

local HAVE_PROC = file_exists("/proc/self/stat")

local function which(name)
  local p = io.popen("command -v " .. shell_quote(name) .. " 2>/dev/null")
  if not p then return nil end
  local out = p:read("*l")
  p:close()
  if out and out ~= "" then return out end
  return nil
end

local HAVE_BASH = which("bash") ~= nil

-- true when started servers do not inherit the spec's descriptors
M.closes_fds = HAVE_BASH and HAVE_PROC

local function find_sink()
  local p = which("smtp-sink")
  if p then return p end
  if file_exists("/usr/sbin/smtp-sink") then return "/usr/sbin/smtp-sink" end
  return nil
end

M.sink_path = find_sink()
M.available = { sink = M.sink_path ~= nil }

-- Is the process with this PID still running?  A zombie counts as dead.
local function alive(pid)
  if HAVE_PROC then
    local f = io.open("/proc/" .. pid .. "/stat", "rb")
    if not f then return false end
    local stat = f:read("*a") or ""
    f:close()
    local state = stat:match("^%d+ %b() (%a)") or stat:match("%) (%a)")
    return state ~= nil and state ~= "Z" and state ~= "X"
  end
  if not execute("kill -0 " .. pid .. " 2>/dev/null") then return false end
  local p = io.popen("ps -o stat= -p " .. pid .. " 2>/dev/null")
  local st = p and p:read("*l") or ""
  if p then p:close() end
  return not st:match("^%s*Z")
end

M.alive = alive

-- Waits (bounded) until cond() returns non-nil; returns that value, or nil
-- on timeout.  cond() may return false to give up early.
local function poll(timeout, cond)
  local deadline = socket.gettime() + timeout
  while true do
    local v = cond()
    if v ~= nil then return v end
    if socket.gettime() >= deadline then return nil end
    socket.sleep(POLL)
  end
end

---------------------------------------------------------------------------
-- process objects
---------------------------------------------------------------------------

local Proc = {}
Proc.__index = Proc

local live = {}   -- every process started and not yet stopped

-- Starts argv (an array of words) with stdout/stderr to the given files.
-- Returns a Proc with pid.
local function spawn(argv, stdout_file, stderr_file)
  local words = {}
  for i, w in ipairs(argv) do words[i] = shell_quote(w) end
  local cmd = table.concat(words, " ")
  local redir = " </dev/null >" .. shell_quote(stdout_file) .. " 2>" .. shell_quote(stderr_file)
  local line
  if HAVE_BASH and HAVE_PROC then
    -- bash closes every inherited descriptor above 2, then execs the server
    local closer = 'for f in /proc/$$/fd/*; do n=${f##*/}; '
      .. 'if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-" 2>/dev/null; fi; done; exec "$@"'
    line = "echo $$; exec bash -c " .. shell_quote(closer) .. " bash " .. cmd .. redir
  else
    line = "echo $$; exec " .. cmd .. redir
  end
  local handle = assert(io.popen(line, "r"))
  local pid = handle:read("*l")
  pid = tonumber(pid)
  if not pid then
    handle:close()
    error("could not start " .. cmd)
  end
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
  return poll(timeout or START_TIMEOUT, function()
    local m = self:output():match(pattern)
    if m then return m end
    if not alive(self.pid) then return false end
    return nil
  end)
end

-- Stops every process started through this module and not yet stopped.
function M.stop_all()
  local list = {}
  for p in pairs(live) do list[#list + 1] = p end
  for _, p in ipairs(list) do p:stop() end
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
-- public constructors
---------------------------------------------------------------------------

function M.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

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
  write_file(script_file, source)
  write_file(record_file, "")
  local proc = spawn({ lua_cmd(), M.root .. "/spec/support/fake_server.lua", script_file, record_file },
    tmpname(), tmpname())
  proc.record_file = record_file
  proc.temp_files[#proc.temp_files + 1] = script_file
  proc.temp_files[#proc.temp_files + 1] = record_file
  local port = proc:_wait_output("PORT (%d+)\n")
  if not port then
    local err = proc:errors()
    proc:stop()
    error("fake server did not start: " .. err)
  end
  proc.port = tonumber(port)
  return proc
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
  local port = proc:_wait_output("^listening on [^\n]*:(%d+)\n")
  if not port then
    local err = proc:errors()
    proc:stop()
    error("smtp-debug-server did not start: " .. err)
  end
  proc.port = tonumber(port)
  return proc
end

local function is_root()
  local p = io.popen("id -u 2>/dev/null")
  local uid = p and p:read("*l")
  if p then p:close() end
  return uid == "0"
end

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
    local up = poll(START_TIMEOUT, function()
      local c = socket.tcp()
      c:settimeout(0.2)
      local ok = c:connect("127.0.0.1", port)
      c:close()
      if ok then return true end
      if not alive(proc.pid) then return false end
      return nil
    end)
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
  local up = poll(START_TIMEOUT, function()
    if os.execute("test -S " .. shell_quote(path)) == true or
        os.execute("test -S " .. shell_quote(path)) == 0 then
      return true
    end
    if not alive(proc.pid) then return false end
    return nil
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
