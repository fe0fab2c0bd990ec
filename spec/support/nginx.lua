-- Runs Debian's nginx with lua-nginx-module for specs, and the helpers
-- those specs need (a concurrent slow SMTP server, an HTTP client that
-- fires many requests at once).
--
--   local nginx = require "spec.support.nginx"
--   local ok, why = nginx.available()     -- nginx, the lua module, resty.core,
--                                         -- and smtp.core built for LuaJIT
--   local ngx_srv = nginx.start()         -- spec/support/nginx/nginx.conf.in
--   local status, body = ngx_srv:get("/send?port=2525")
--   local list = ngx_srv:get_many({ "/send?...", ... })   -- concurrently
--   ngx_srv:error_log(); ngx_srv:stop()
--   local slow = nginx.slow_server{ delay = 0.2 }  -- spec/support/slow_server.lua
--
-- nginx runs in the foreground (-g 'daemon off;') as a child of the spec,
-- from a config written under a fresh temporary prefix, on a free
-- 127.0.0.1 port, and is stopped by its PID (QUIT, then TERM, then KILL).
-- The popen handle that started it is closed only once it has exited, which
-- reaps it: no zombie is left even where PID 1 does not reap orphans.
-- Works with Lua 5.1 .. 5.4 and LuaSocket.

local socket = require "socket"
local util = require "spec.support.util"

local M = {}

M.modules_dir = os.getenv("NGINX_MODULES_DIR") or "/usr/lib/nginx/modules"

local START_TIMEOUT = 10

local shell_quote, execute, write_file, exists, which, poll, free_port, is_root, alive =
  util.shell_quote, util.execute, util.write_file, util.file_exists, util.which,
  util.poll, util.free_port, util.is_root, util.alive
local read_file = util.read_file

-- Repository root, absolute: nginx's workers do not share our working
-- directory.
M.root = util.root

---------------------------------------------------------------------------
-- processes
---------------------------------------------------------------------------

local Proc = {}
Proc.__index = Proc
local live = {}

-- argv with stdout/stderr to files (util.spawn: the child closes every
-- inherited descriptor above 2, the spec's sockets, before exec).
local function spawn(argv, stdout_file, stderr_file)
  local handle, pid, cmd = util.spawn(argv, { stdout = stdout_file, stderr = stderr_file })
  local self = setmetatable({ pid = pid, handle = handle, stdout_file = stdout_file,
    stderr_file = stderr_file, command = cmd, cleanup = {} }, Proc)
  live[self] = true
  return self
end

function Proc:alive()
  return self.handle ~= nil and alive(self.pid)
end

function Proc:output() return read_file(self.stdout_file) or "" end
function Proc:errors() return read_file(self.stderr_file) or "" end

-- Signals sig, waits up to t seconds; true once the process is gone.
function Proc:_signal(sig, t)
  if not alive(self.pid) then return true end
  execute("kill -" .. sig .. " " .. self.pid .. " 2>/dev/null")
  return poll(t, function() return (not alive(self.pid)) or nil end) ~= nil
end

-- first_signal: QUIT for nginx (graceful), TERM otherwise.
function Proc:stop()
  if self.handle then
    if not self:_signal(self.first_signal or "TERM", 3) then
      if not self:_signal("TERM", 2) then self:_signal("KILL", 5) end
    end
    local h = self.handle
    self.handle = nil
    h:close()
  end
  live[self] = nil
  for _, f in ipairs(self.cleanup) do f() end
  self.cleanup = {}
  return true
end

function M.stop_all()
  util.stop_all(live)
end

---------------------------------------------------------------------------
-- availability and build
---------------------------------------------------------------------------

-- $NGINX, else nginx on PATH, else /usr/sbin/nginx; nil when none exists.
local function nginx_binary()
  local env = os.getenv("NGINX")
  if env and env ~= "" then return exists(env) and env or nil end
  return which("nginx") or (exists("/usr/sbin/nginx") and "/usr/sbin/nginx") or nil
end

-- Builds smtp.core for LuaJIT (the ABI of nginx's Lua) with the Makefile.
function M.build()
  if M._built ~= nil then return M._built, M._build_err end
  local log = os.tmpname()
  local ok = execute("cd " .. shell_quote(M.root) .. " && make -s LUA=luajit LUA_PC=luajit >"
    .. shell_quote(log) .. " 2>&1")
  M._built = ok and exists(M.root .. "/build/luajit/smtp/core.so")
  M._build_err = (read_file(log) or ""):sub(-2000)
  os.remove(log)
  return M._built, M._build_err
end

-- true, or false and why not.
function M.available()
  local bin = nginx_binary()
  if not bin then return false, "nginx is not installed" end
  for _, m in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
    if not exists(M.modules_dir .. "/" .. m) then
      return false, "nginx module " .. m .. " is missing (apt-get install libnginx-mod-http-lua)"
    end
  end
  if not exists("/usr/share/lua/5.1/resty/core.lua") and not os.getenv("NGINX_RESTY_CORE_OK") then
    return false, "lua-resty-core is missing (apt-get install lua-resty-core)"
  end
  if not execute("pkg-config --exists luajit 2>/dev/null") and
     not exists(M.root .. "/build/luajit/smtp/core.so") then
    return false, "LuaJIT headers are missing (apt-get install libluajit2-5.1-dev)"
  end
  local built, err = M.build()
  if not built then return false, "make LUA=luajit failed: " .. tostring(err) end
  return true
end

---------------------------------------------------------------------------
-- nginx
---------------------------------------------------------------------------

local function fill(template, vars)
  return (template:gsub("%${(%u+)}", function(k)
    assert(vars[k], "no value for ${" .. k .. "}")
    return vars[k]
  end))
end

local Nginx = setmetatable({}, { __index = Proc })
Nginx.__index = Nginx

-- opts.conf: template path (default spec/support/nginx/nginx.conf.in);
-- opts.ca: a CA file for lua_ssl_trusted_certificate (TLS verification);
-- opts.vars: more ${NAME} values for the template (load/nginx.conf.in).
function M.start(opts)
  opts = opts or {}
  local bin = assert(nginx_binary(), "nginx is not installed")
  local template = assert(read_file(opts.conf or (M.root .. "/spec/support/nginx/nginx.conf.in")))
  local last_err = ""
  for _ = 1, 5 do
    local prefix = util.mkdtemp("lua-smtp-nginx")
    -- workers may run as nobody: the prefix must be theirs to read
    assert(execute("mkdir -p " .. shell_quote(prefix .. "/conf") .. " " .. shell_quote(prefix .. "/logs")
      .. " && chmod 755 " .. shell_quote(prefix) .. " " .. shell_quote(prefix .. "/conf")))
    local port = free_port()
    local vars = {
      ROOT = M.root, PORT = tostring(port), MODULES = M.modules_dir,
      USER = is_root() and "user root;" or "",
      TLS = opts.ca and ("lua_ssl_trusted_certificate " .. opts.ca .. ";\n"
        .. "    lua_ssl_verify_depth 3;\n    lua_ssl_protocols TLSv1.2 TLSv1.3;") or "",
    }
    for k, v in pairs(opts.vars or {}) do vars[k] = tostring(v) end
    write_file(prefix .. "/conf/nginx.conf", fill(template, vars))
    local proc = spawn({ bin, "-p", prefix .. "/", "-e", "logs/error.log", "-c", "conf/nginx.conf",
      "-g", "daemon off;" }, prefix .. "/logs/stdout", prefix .. "/logs/stderr")
    setmetatable(proc, Nginx)
    proc.first_signal = "QUIT"
    proc.prefix, proc.port = prefix, port
    proc.cleanup[#proc.cleanup + 1] = function()
      if not os.getenv("KEEP_NGINX_PREFIX") then execute("rm -rf " .. shell_quote(prefix)) end
    end
    local up = util.wait_port(port, START_TIMEOUT, proc.pid)
    if up then return proc end
    last_err = proc:error_log() .. proc:errors()
    proc:stop()
    if not last_err:find("Address already in use", 1, true) then break end
  end
  error("nginx did not start:\n" .. last_err)
end

function Nginx:error_log()
  return read_file(self.prefix .. "/logs/error.log") or ""
end

-- Waits until the error log matches pattern; returns the capture or nil.
function Nginx:wait_log(pattern, timeout)
  return poll(timeout or 5, function() return self:error_log():match(pattern) end, 0.05)
end

-- Fires every request at once (one connection each, HTTP/1.0), then reads
-- all the responses. Returns a list of { status = n, body = s, time = s }
-- in the order of paths, and the seconds it all took.
function Nginx:get_many(paths, timeout)
  timeout = timeout or 60
  local t0 = socket.gettime()
  local pending = {}
  for i, path in ipairs(paths) do
    local c = socket.tcp()
    c:settimeout(5)
    assert(c:connect("127.0.0.1", self.port))
    assert(c:send("GET " .. path .. " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
    c:settimeout(0)
    pending[c] = { i = i, parts = {} }
  end
  local results = {}
  local deadline = t0 + timeout
  while next(pending) and socket.gettime() < deadline do
    local socks = {}
    for c in pairs(pending) do socks[#socks + 1] = c end
    local readable = socket.select(socks, nil, 0.5)
    for _, c in ipairs(readable or {}) do
      local st = pending[c]
      local data, err, partial = c:receive(65536)
      data = data or partial
      if data and #data > 0 then st.parts[#st.parts + 1] = data end
      if err == "closed" then
        local raw = table.concat(st.parts)
        local status = tonumber(raw:match("^HTTP/%d%.%d (%d%d%d)"))
        local body = raw:match("\r\n\r\n(.*)$") or ""
        results[st.i] = { status = status, body = body, time = socket.gettime() - t0 }
        pending[c] = nil
        c:close()
      end
    end
  end
  for c, st in pairs(pending) do
    results[st.i] = { status = nil, body = "", time = socket.gettime() - t0, error = "timeout" }
    c:close()
  end
  return results, socket.gettime() - t0
end

-- One request: status, body, seconds.
function Nginx:get(path, timeout)
  local r, t = self:get_many({ path }, timeout)
  return r[1].status, r[1].body, t
end

---------------------------------------------------------------------------
-- the slow concurrent SMTP server
---------------------------------------------------------------------------

local SlowServer = setmetatable({}, { __index = Proc })
SlowServer.__index = SlowServer

-- opts: delay (seconds per reply, default 0.2), max_time (default 60),
-- lua (interpreter, default $LUA_SERVER or lua5.4), cert + key (PEM files:
-- offer STARTTLS), implicit (TLS from the first byte), client_ca (demand a
-- client certificate signed by it).
function M.slow_server(opts)
  opts = opts or {}
  local out, err = os.tmpname(), os.tmpname()
  local argv = { opts.lua or os.getenv("LUA_SERVER") or "lua5.4",
    M.root .. "/spec/support/slow_server.lua",
    "--delay", tostring(opts.delay or 0.2), "--max-time", tostring(opts.max_time or 60) }
  if opts.cert then
    for _, a in ipairs({ "--cert", opts.cert, "--key", opts.key }) do argv[#argv + 1] = a end
    if opts.implicit then argv[#argv + 1] = "--implicit" end
    if opts.client_ca then
      argv[#argv + 1] = "--client-ca"
      argv[#argv + 1] = opts.client_ca
    end
  end
  local proc = spawn(argv, out, err)
  setmetatable(proc, SlowServer)
  proc.cleanup[#proc.cleanup + 1] = function() os.remove(out) os.remove(err) end
  local port = tonumber(util.poll_alive(START_TIMEOUT, proc.pid, function()
    return proc:output():match("PORT (%d+)\n")
  end))
  if not port then
    local e = proc:errors()
    proc:stop()
    error("slow_server did not start: " .. e)
  end
  proc.port = port
  return proc
end

-- The messages it accepted: list of { from, to, size, subject }.
function SlowServer:messages()
  local list = {}
  local pattern = "MESSAGE %d+ FROM (%S*) TO (%S*) SIZE (%d+) SUBJECT ([^\n]*)\n"
  for from, to, size, subject in self:output():gmatch(pattern) do
    list[#list + 1] = { from = from, to = to, size = tonumber(size), subject = subject }
  end
  return list
end

return M
