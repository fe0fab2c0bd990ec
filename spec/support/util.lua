-- The small helpers every spec, test server, bench and load script needs:
-- shell quoting, running commands, files, temporary directories, keys made
-- with openssl, free ports, waiting for a condition or a port, and whether
-- a process lives.  One copy here; spec/support/*.lua, spec/*_spec.lua,
-- bench/, load/ and fuzz/ require it.
--
--   local util = require "spec.support.util"
--
-- From a script outside the specs (bench/, load/, fuzz/), put the
-- repository root on package.path first, relative to the script:
--
--   local root = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.."
--   package.path = root .. "/?.lua;" .. package.path
--
-- LuaSocket is loaded only by the helpers that need a socket or a clock
-- (free_port, port_open, wait_port, poll, wait_for, sleep, connect,
-- greets), so that a
-- script measuring its own memory or running without LuaSocket can use
-- the rest.  Works with Lua 5.1 .. 5.4 and LuaJIT.

local M = {}

local function socket() return require "socket" end

---------------------------------------------------------------------------
-- the shell
---------------------------------------------------------------------------

-- 'text' for sh: safe for any string.
function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The exit status from os.execute's results, in Lua 5.1 (a wait status)
-- and 5.2+ (true|nil, "exit"|"signal", code).
function M.exit_status(a, how, code)
  if type(a) == "number" then
    if a > 255 then return math.floor(a / 256) end
    return a
  end
  if how == "exit" then return code end
  if how == "signal" then return 128 + code end
  return a and 0 or 1
end

-- os.execute(cmd) as a boolean: true when it exited 0.
function M.execute(cmd)
  return M.exit_status(os.execute(cmd)) == 0
end

-- Runs cmd through sh with stderr joined to stdout: ok (exit status 0),
-- the output, the exit status.  (Lua 5.1's and LuaJIT's close gives no
-- status, so the shell prints it after the output.)
function M.run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"UTIL-EXIT:$?\""))
  local out = p:read("*a") or ""
  p:close()
  local code = tonumber(out:match("UTIL%-EXIT:(%d+)%s*$"))
  out = out:gsub("UTIL%-EXIT:%d+%s*$", "")
  return code == 0, out, code
end

-- cmd's standard output ("" when it cannot run); stderr is left alone.
function M.capture(cmd)
  local p = io.popen(cmd, "r")
  if not p then return "" end
  local out = p:read("*a") or ""
  p:close()
  return out
end

-- The path of a program on PATH, or nil.
function M.which(name)
  local out = M.capture("command -v " .. M.shell_quote(name) .. " 2>/dev/null"):gsub("%s+$", "")
  if out ~= "" then return out end
  return nil
end

-- The first of name (on PATH) and the fallback paths that exists, or nil.
function M.find_program(name, fallbacks)
  local p = M.which(name)
  if p then return p end
  for _, f in ipairs(fallbacks or {}) do
    if M.file_exists(f) then return f end
  end
  return nil
end

local is_root
function M.is_root()
  if is_root == nil then is_root = M.capture("id -u 2>/dev/null"):match("^%s*0%s*$") ~= nil end
  return is_root
end

---------------------------------------------------------------------------
-- files and directories
---------------------------------------------------------------------------

-- The whole file, or nil and the error.
function M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a") or ""
  f:close()
  return s
end

function M.write_file(path, content)
  local f = assert(io.open(path, "wb"))
  assert(f:write(content))
  f:close()
end

function M.file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- The lines of text (without their "\n"; a final "\n" ends the last line,
-- it does not start an empty one).
function M.lines(text)
  local out = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do out[#out + 1] = line end
  if text:sub(-1) == "\n" then out[#out] = nil end
  return out
end

-- The last n lines (default 30) of text, as text.
function M.tail(text, n)
  n = n or 30
  local lines = {}
  for line in (text or ""):gmatch("[^\n]*\n?") do
    if line ~= "" then lines[#lines + 1] = line end
  end
  return table.concat(lines, "", math.max(1, #lines - n + 1))
end

-- The names in a directory (ls -1: no dot files), sorted; {} when it is
-- missing.
function M.list_dir(dir)
  local names = {}
  for name in M.capture("ls -1 " .. M.shell_quote(dir) .. " 2>/dev/null"):gmatch("[^\n]+") do
    names[#names + 1] = name
  end
  table.sort(names)
  return names
end

-- A fresh directory /tmp/<prefix>.XXXXXX (prefix default "lua-smtp").
function M.mkdtemp(prefix)
  local out = M.capture("mktemp -d " .. M.shell_quote("/tmp/" .. (prefix or "lua-smtp") .. ".XXXXXX")
    .. " 2>/dev/null"):gsub("%s+$", "")
  assert(out ~= "", "mktemp -d failed")
  return out
end

-- rm -rf dir (nothing when dir is nil).
function M.remove_tree(dir)
  if dir and dir ~= "" then M.execute("rm -rf " .. M.shell_quote(dir)) end
end

-- The repository root, absolute (from this file's path,
-- spec/support/util.lua, else the working directory).
local function repo_root()
  local src = debug.getinfo(1, "S").source
  local dir = "."
  if src:sub(1, 1) == "@" then
    dir = src:sub(2):match("^(.*)[/\\]spec[/\\]support[/\\][^/\\]*$") or "."
    if dir == "" then dir = "." end
  end
  if dir:sub(1, 1) ~= "/" then
    local pwd = os.getenv("PWD")
    if not pwd or pwd == "" then pwd = M.capture("pwd"):gsub("%s+$", "") end
    dir = (dir == ".") and pwd or (pwd .. "/" .. dir:gsub("^%./", ""))
  end
  return dir
end

M.root = repo_root()

-- Decodes RFC 2047 words (UTF-8, B or Q) as a reader does: white space
-- between two adjacent encoded words disappears.  (smtp.core decodes
-- base64.)
function M.decode_words(v)
  local core = require "smtp.core"
  v = v:gsub("(%?=)%s+(=%?)", "%1%2")
  return (v:gsub("=%?UTF%-8%?([BQ])%?(.-)%?=", function(kind, payload)
    if kind == "B" then return assert(core.b64decode(payload)) end
    payload = payload:gsub("_", " ")
    return (payload:gsub("=(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end))
end

-- The message every bench client sends (bench/lua_smtp_client.lua,
-- bench/luasocket_client.lua; bench/smtplib_client.py builds the same): a
-- few headers and lines of up to 70 characters of text, CRLF line ends,
-- size octets in all.
local BENCH_TEXT = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod " ..
  "tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis " ..
  "nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. "
function M.bench_message(size)
  local head = "From: bench <a@x.test>\r\nTo: <b@y.test>\r\nSubject: bench\r\n\r\n"
  local parts, n, i = { head }, #head, 0
  local twice = BENCH_TEXT .. BENCH_TEXT
  while n < size do
    local off = (i * 7) % #BENCH_TEXT
    local want = math.min(70, size - n - 2)
    if want < 1 then want = 1 end
    local line = twice:sub(off + 1, off + want) .. "\r\n"
    parts[#parts + 1] = line
    n = n + #line
    i = i + 1
  end
  return table.concat(parts)
end

-- For the bench clients: failed(i, err) counts a failed message and shows
-- the first five on stderr ("<name>: message <i> failed: <err>");
-- failed() returns the count.
function M.failure_counter(name)
  local n = 0
  return function(i, err)
    if i == nil then return n end
    n = n + 1
    if n <= 5 then
      io.stderr:write(string.format("%s: message %s failed: %s\n", name, tostring(i), tostring(err)))
    end
    return n
  end
end

---------------------------------------------------------------------------
-- keys
---------------------------------------------------------------------------

-- A private key made by openssl genpkey, in PEM, written to path.
-- algorithm: "rsa" (2048 bits), "rsa:BITS", "ed25519".
function M.openssl_key(path, algorithm)
  local alg, bits = (algorithm or "rsa"):lower():match("^(%w+):?(%d*)$")
  local args
  if alg == "rsa" then
    args = "-algorithm RSA -pkeyopt rsa_keygen_bits:" .. (bits ~= "" and bits or "2048")
  elseif alg == "ed25519" then
    args = "-algorithm ED25519"
  else
    error("openssl_key: unknown algorithm " .. tostring(algorithm))
  end
  local ok, out = M.run("openssl genpkey " .. args .. " -out " .. M.shell_quote(path))
  assert(ok, "openssl genpkey " .. args .. " failed: " .. out)
  return path
end

---------------------------------------------------------------------------
-- waiting, ports and processes
---------------------------------------------------------------------------

function M.sleep(seconds) socket().sleep(seconds) end

-- Calls cond() every step seconds (default 0.02) until it returns non-nil,
-- for at most timeout seconds; returns that value, or nil on timeout.
-- cond() may return false to give up early.
function M.poll(timeout, cond, step)
  local s = socket()
  local deadline = s.gettime() + timeout
  while true do
    local v = cond()
    if v ~= nil then return v end
    if s.gettime() >= deadline then return nil end
    s.sleep(step or 0.02)
  end
end

-- true once cond() is true (within timeout seconds), else false.
function M.wait_for(timeout, cond, step)
  return M.poll(timeout, function() return cond() and true or nil end, step) == true
end

-- A port that was free on 127.0.0.1 a moment ago.
function M.free_port()
  local s = assert(socket().bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- Does something accept a TCP connection on host (127.0.0.1) and port?
function M.port_open(port, host)
  local c = socket().tcp()
  c:settimeout(0.2)
  local ok = c:connect(host or "127.0.0.1", port)
  c:close()
  return ok ~= nil
end

-- poll for a process that is starting: cond()'s first true value; nil on
-- timeout; false as soon as the process pid (when given) is gone.
function M.poll_alive(timeout, pid, cond)
  return M.poll(timeout, function()
    local v = cond()
    if v then return v end
    if pid and not M.alive(pid) then return false end
    return nil
  end)
end

-- Waits (at most timeout seconds) until port accepts connections: true;
-- nil on timeout; false as soon as the process pid (when given) is gone.
function M.wait_port(port, timeout, pid)
  return M.poll_alive(timeout, pid, function() return M.port_open(port) end)
end

-- A LuaSocket client connected to 127.0.0.1:port, with a 5 s timeout.
function M.connect(port)
  local c = assert(socket().connect("127.0.0.1", port))
  c:settimeout(5)
  return c
end

-- One (possibly multi-line) SMTP reply read from c: code, lines.
function M.read_reply(c)
  local lines = {}
  while true do
    local line, err = c:receive("*l")
    assert(line, "no reply: " .. tostring(err))
    lines[#lines + 1] = line
    if line:sub(4, 4) ~= "-" then return tonumber(line:sub(1, 3)), lines end
  end
end

-- Does an SMTP or LMTP server on 127.0.0.1:port greet (220)?  It is sent
-- QUIT then.
function M.greets(port)
  local c = socket().tcp()
  c:settimeout(2)
  if not c:connect("127.0.0.1", port) then c:close() return false end
  local line = c:receive("*l")
  if line then c:send("QUIT\r\n") end
  c:close()
  return line ~= nil and line:match("^220") ~= nil
end

local HAVE_PROC = M.file_exists("/proc/self/stat")

-- Is the process with this PID still running?  A zombie counts as dead.
function M.alive(pid)
  if HAVE_PROC then
    local stat = M.read_file("/proc/" .. pid .. "/stat")
    if not stat then return false end
    local state = stat:match("^%d+ %b() (%a)") or stat:match("%) (%a)")
    return state ~= nil and state ~= "Z" and state ~= "X"
  end
  if not M.execute("kill -0 " .. pid .. " 2>/dev/null") then return false end
  return not M.capture("ps -o stat= -p " .. pid .. " 2>/dev/null"):match("^%s*Z")
end

-- Calls :stop() on every key of the set live (the objects a support
-- module started and has not stopped yet).
function M.stop_all(live)
  local list = {}
  for x in pairs(live) do list[#list + 1] = x end
  for _, x in ipairs(list) do x:stop() end
end

-- Calls start_once(opts) up to 3 times, again only while it failed
-- because a port was taken in the meantime (its third result is true);
-- returns what it started, or raises its last error at the caller's
-- caller (the spec that called X.start).
function M.start_retrying(start_once, opts)
  local last
  for _ = 1, 3 do
    local started, err, busy = start_once(opts)
    if started then return started end
    last = err
    if not busy then break end
  end
  error(last, 3)
end

-- Starts argv (a list of words) through io.popen as "echo $$; exec ...":
-- the PID read back is the program's own, and this Lua process its parent.
-- opts.stdout: file for its standard output (else /dev/null); opts.stderr:
-- file for its standard error (else joined to stdout).  Standard input is /dev/null.  Descriptors above 2 inherited
-- from this process (a spec's client sockets) are closed in the child when
-- bash and /proc are there, so a server never keeps a spec's connection
-- open.  Returns the popen handle, the PID and the command line.  Close
-- the handle only once the process has exited: that reaps it, and no
-- zombie is left even where PID 1 does not reap orphans.
local CLOSER = 'for f in /proc/$$/fd/*; do n=${f##*/}; '
  .. 'if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-" 2>/dev/null; fi; done; exec "$@"'
local can_close
function M.spawn(argv, opts)
  opts = opts or {}
  if can_close == nil then can_close = HAVE_PROC and M.which("bash") ~= nil end
  local words = {}
  for i, w in ipairs(argv) do words[i] = M.shell_quote(w) end
  local cmd = table.concat(words, " ")
  local redir = " </dev/null >" .. M.shell_quote(opts.stdout or "/dev/null")
    .. (opts.stderr and (" 2>" .. M.shell_quote(opts.stderr)) or " 2>&1")
  local line
  if can_close then
    line = "echo $$; exec bash -c " .. M.shell_quote(CLOSER) .. " bash "
      .. cmd .. redir
  else
    line = "echo $$; exec " .. cmd .. redir
  end
  local handle = assert(io.popen(line, "r"))
  local pid = tonumber(handle:read("*l"))
  if not pid then
    handle:close()
    error("could not start " .. cmd)
  end
  return handle, pid, cmd
end

-- true when M.spawn closes inherited descriptors in the child
function M.spawn_closes_fds()
  if can_close == nil then can_close = HAVE_PROC and M.which("bash") ~= nil end
  return can_close
end

return M
