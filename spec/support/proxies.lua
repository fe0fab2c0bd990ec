-- Real proxies for spec/proxy_spec.lua, each from a private configuration
-- in a fresh temporary directory, in the foreground, on a free 127.0.0.1
-- port, stopped by PID (spec/support/servers.lua's processes):
--
--   local proxies = require "spec.support.proxies"
--   proxies.have_dante, proxies.have_tinyproxy     -- the binaries exist
--   local d = proxies.dante{ user = "name" }       -- Dante (danted): SOCKS5;
--       -- user: the username method (RFC 1929) against that system user
--       -- (proxies.add_user makes one); refuse = port: destinations on
--       -- that port are refused by a rule (SOCKS5 reply 2)
--   local t = proxies.tinyproxy{ ports = { n, ... }, user =, password = }
--       -- tinyproxy: HTTP CONNECT to those ports only (ConnectPort),
--       -- BasicAuth when user and password are given
--   d.port, d:stop(), d:log()
--
-- Dante checks the username method against the system's password database,
-- so that part needs a system user: add_user(name, password) makes one
-- (useradd, no home, no shell: root only) and del_user removes it.
local servers = require "spec.support.servers"
local util = require "spec.support.util"
local shell_quote, execute, capture = util.shell_quote, util.execute, util.capture
local socket = require "socket"

local M = {}

local function find(names)
  for _, n in ipairs(names) do
    local f = io.open(n, "rb")
    if f then f:close() return n end
  end
  return nil
end

local function write_file(path, content)
  local f = assert(io.open(path, "wb"))
  assert(f:write(content))
  f:close()
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a") or ""
  f:close()
  return s
end

M.danted = find({ "/usr/sbin/danted", "/usr/sbin/sockd" })
M.tinyproxy_bin = find({ "/usr/bin/tinyproxy", "/usr/sbin/tinyproxy" })
M.have_dante = M.danted ~= nil
M.have_tinyproxy = M.tinyproxy_bin ~= nil

M.is_root = capture("id -u 2>/dev/null"):match("^%s*0%s*$") ~= nil

local function port_open(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end

local function tmpdir()
  local dir = capture("mktemp -d /tmp/lua-smtp-proxy.XXXXXX"):match("^%s*(.-)%s*$")
  assert(dir ~= "", "mktemp -d failed")
  execute("chmod 755 " .. shell_quote(dir))
  return dir
end

-- Starts argv with the config written; waits (bounded) for the port.
local function start(name, argv, dir, port)
  local proc = servers.spawn(argv, dir .. "/stdout", dir .. "/stderr")
  local deadline = socket.gettime() + 5
  while not port_open(port) do
    if not proc:alive() or socket.gettime() > deadline then
      local why = proc:errors() .. proc:output() .. read_file(dir .. "/log")
      proc:stop()
      execute("rm -rf " .. shell_quote(dir))
      error(name .. " did not start on port " .. port .. ":\n" .. why)
    end
    socket.sleep(0.02)
  end
  proc.port, proc.dir = port, dir
  local stop = proc.stop
  function proc:stop()
    stop(self)
    if self.dir then
      execute("rm -rf " .. shell_quote(self.dir))
      self.dir = nil
    end
    return true
  end
  function proc:log()
    return self.dir and (read_file(self.dir .. "/log") .. self:errors() .. self:output()) or ""
  end
  return proc
end

function M.dante(opts)
  opts = opts or {}
  assert(M.danted, "danted is not installed")
  local dir = tmpdir()
  local port = servers.free_port()
  local lines = {
    "logoutput: " .. dir .. "/log",
    "internal: 127.0.0.1 port = " .. port,
    "external: 127.0.0.1",
    "clientmethod: none",
    "socksmethod: " .. (opts.user and "username" or "none"),
    "timeout.negotiate: 10",
    "timeout.io: 30",
    -- as root: the username method reads /etc/shadow with privileges
    M.is_root and "user.privileged: root\nuser.unprivileged: nobody" or "# not root: no user switching",
    "client pass {",
    "  from: 127.0.0.1/32 to: 0.0.0.0/0",
    "  log: error",
    "}",
  }
  if opts.refuse then
    lines[#lines + 1] = "socks block {"
    lines[#lines + 1] = "  from: 127.0.0.1/32 to: 0.0.0.0/0 port = " .. opts.refuse
    lines[#lines + 1] = "  log: error connect"
    lines[#lines + 1] = "}"
  end
  lines[#lines + 1] = "socks pass {"
  lines[#lines + 1] = "  from: 127.0.0.1/32 to: 127.0.0.1/32"
  lines[#lines + 1] = "  command: connect"
  if opts.user then lines[#lines + 1] = "  socksmethod: username" end
  lines[#lines + 1] = "  log: error connect"
  lines[#lines + 1] = "}"
  lines[#lines + 1] = "socks block {"
  lines[#lines + 1] = "  from: 0.0.0.0/0 to: 0.0.0.0/0"
  lines[#lines + 1] = "  log: error connect"
  lines[#lines + 1] = "}"
  write_file(dir .. "/sockd.conf", table.concat(lines, "\n") .. "\n")
  write_file(dir .. "/log", "")
  execute("chmod 666 " .. shell_quote(dir .. "/log"))
  return start("danted", { M.danted, "-f", dir .. "/sockd.conf", "-p", dir .. "/sockd.pid", "-N", "1" },
    dir, port)
end

function M.tinyproxy(opts)
  opts = opts or {}
  assert(M.tinyproxy_bin, "tinyproxy is not installed")
  local dir = tmpdir()
  local port = servers.free_port()
  local lines = {
    "Port " .. port,
    "Listen 127.0.0.1",
    "Timeout 30",
    "MaxClients 20",
    "LogLevel Info",
    "LogFile \"" .. dir .. "/log\"",
    "Allow 127.0.0.1",
    "DisableViaHeader Yes",
  }
  if M.is_root then
    lines[#lines + 1] = "User nobody"
    lines[#lines + 1] = "Group nogroup"
  end
  for _, p in ipairs(opts.ports or {}) do lines[#lines + 1] = "ConnectPort " .. p end
  if opts.user then lines[#lines + 1] = "BasicAuth " .. opts.user .. " " .. opts.password end
  write_file(dir .. "/tinyproxy.conf", table.concat(lines, "\n") .. "\n")
  write_file(dir .. "/log", "")
  execute("chmod 666 " .. shell_quote(dir .. "/log"))
  return start("tinyproxy", { M.tinyproxy_bin, "-d", "-c", dir .. "/tinyproxy.conf" }, dir, port)
end

-- A system user for Dante's username method (root only): true, or false
-- and why not.
function M.add_user(name, password)
  if not M.is_root then return false, "not root: cannot add a system user for Dante" end
  local hash = capture("openssl passwd -6 " .. shell_quote(password) .. " 2>/dev/null"):match("^%s*(%S+)")
  if not hash then return false, "openssl passwd failed" end
  if execute("id " .. shell_quote(name) .. " >/dev/null 2>&1") then
    execute("userdel " .. shell_quote(name) .. " >/dev/null 2>&1")
  end
  if not execute("useradd --system --no-create-home --shell /usr/sbin/nologin -p " .. shell_quote(hash) ..
      " " .. shell_quote(name) .. " >/dev/null 2>&1") then
    return false, "useradd failed"
  end
  return true
end

function M.del_user(name)
  execute("userdel " .. shell_quote(name) .. " >/dev/null 2>&1")
end

return M
