-- A scriptable SMTP-ish server for specs, run as its own process:
--
--   lua5.4 spec/support/fake_server.lua SCRIPT_FILE RECORD_FILE
--
-- Binds 127.0.0.1 on a free port, prints "PORT <n>" on stdout and serves
-- connections one after another, following the script (see servers.lua and
-- the step list below).  Every byte received is appended to RECORD_FILE.
-- Never runs longer than script.timeout seconds (default 10) in total.
--
-- Steps (applied to each connection in order):
--   { send = "bytes" }                  write bytes
--   { sendfn = "return ..." }           write the bytes returned by a Lua chunk
--   { expect = "^EHLO " }               read a line, check it against a Lua pattern;
--                                       on mismatch reply "500 5.5.2 unexpected",
--                                       log "MISMATCH: <line>" to stderr, end connection
--   { read = "line" | "data" | "all" }  read a line / up to "." / until the client closes
--   { sleep = seconds }                 pause
--   { trickle = "bytes", interval = s } write one byte at a time
--   { close = true }                    close now (ends the script for this connection)
--   { reset = true }                    close with SO_LINGER 0 (RST)
--   { starttls = true }                 TLS handshake as server on this connection
--                                       (after e.g. { send = "220 go ahead\r\n" });
--                                       bytes the client sent ahead, still unread,
--                                       are discarded (as a correct server does) and
--                                       "TLS: discarded N bytes read ahead" is logged
-- After the last step the server reads until the client closes, then closes.
--
-- TLS (LuaSec, loaded only when a script uses it):
--   tls = { cert = "server.crt", key = "server.key",     script-level options
--           cafile = "ca.crt", verify = "peer" | {...},  (optional: ask for and
--           protocol = "any", ciphers = "..." }           check client certificates)
--   implicit_tls = true                 handshake right after accept (SMTPS)
-- After the handshake every step goes through TLS.  The record file keeps
-- the bytes exactly as the client sent them: plaintext before the
-- handshake, then the decrypted plaintext, appended to the same file with
-- no marker in between (the handshake itself is not recorded).  stderr
-- gets "TLS: handshake ok <protocol>" or "TLS: handshake failed: <error>",
-- and "TLS: client certificate CN=<cn>" when the client sent one (ask for
-- it with verify = { "peer", "fail_if_no_peer_cert" } and cafile); a failed
-- handshake ends the connection, not the server.
-- Works with Lua 5.1 .. 5.4.

local socket = require "socket"

local script_file, record_file = arg[1], arg[2]
if not script_file or not record_file then
  io.stderr:write("usage: fake_server.lua SCRIPT_FILE RECORD_FILE\n")
  os.exit(2)
end

local load_chunk = loadstring or load  -- luacheck: ignore loadstring

local function load_file_table(path)
  local f = assert(io.open(path, "rb"))
  local src = f:read("*a")
  f:close()
  local chunk = assert(load_chunk(src, "=" .. path))
  local t = chunk()
  assert(type(t) == "table", "script must return a table")
  return t
end

local script = load_file_table(script_file)
local steps = script.steps or {}
local connections = script.connections or 1
local start = socket.gettime()
local deadline = start + (script.timeout or 10)

local record = assert(io.open(record_file, "ab"))

local ssl_ctx   -- LuaSec context, made on first use

local function log(...)
  io.stderr:write(table.concat({ ... }), "\n")
  io.stderr:flush()
end

local function remaining()
  return deadline - socket.gettime()
end

local function timed_out()
  log("TIMEOUT after ", string.format("%.2f", socket.gettime() - start), " s")
  record:close()
  os.exit(3)
end

local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
io.stdout:write("PORT ", tostring(port), "\n")
io.stdout:flush()

---------------------------------------------------------------------------
-- a connection with its own input buffer
---------------------------------------------------------------------------

local Conn = {}
Conn.__index = Conn

function Conn.new(sock)
  return setmetatable({ sock = sock, raw = sock, buf = "", eof = false }, Conn)
end

-- LuaSec reports a would-block as "wantread"/"wantwrite"
local function would_block(err)
  return err == "timeout" or err == "wantread" or err == "wantwrite"
end

-- Waits for input (bounded by the deadline) and appends it to the buffer.
-- Returns true if something was read, false on EOF or error.
function Conn:more()
  if self.eof then return false end
  while true do
    local left = remaining()
    if left <= 0 then timed_out() end
    local readable = socket.select({ self.sock }, nil, math.min(left, 0.5))
    if readable[self.sock] or readable[1] then break end
  end
  self.sock:settimeout(0)
  local data, err, partial = self.sock:receive(65536)
  data = data or partial
  if data and #data > 0 then
    record:write(data)
    record:flush()
    self.buf = self.buf .. data
  end
  if err and not would_block(err) then
    self.eof = true
  end
  return data ~= nil and #data > 0
end

-- One line up to LF; returns it without CRLF, or nil at EOF.
function Conn:line()
  while true do
    local nl = self.buf:find("\n", 1, true)
    if nl then
      local line = self.buf:sub(1, nl - 1)
      self.buf = self.buf:sub(nl + 1)
      return (line:gsub("\r$", ""))
    end
    if not self:more() and self.eof then return nil end
  end
end

-- Everything up to and including a line that is exactly ".".
function Conn:data()
  while true do
    local line = self:line()
    if line == nil then return nil end
    if line == "." then return true end
  end
end

function Conn:all()
  while not self.eof do self:more() end
  self.buf = ""
  return true
end

function Conn:send(bytes)
  local i = 1
  while i <= #bytes do
    local left = remaining()
    if left <= 0 then timed_out() end
    self.sock:settimeout(math.min(left, 0.5))
    local last, err, partial_last = self.sock:send(bytes, i)
    if last then
      i = last + 1
    elseif would_block(err) then
      i = (partial_last or (i - 1)) + 1
    else
      return nil, err
    end
  end
  return true
end

local function tls_context()
  if ssl_ctx then return ssl_ctx end
  local ok, ssl = pcall(require, "ssl")
  if not ok then
    log("TLS: LuaSec (require \"ssl\") is not available: ", tostring(ssl))
    os.exit(4)
  end
  local t = script.tls or {}
  if not (t.cert and t.key) then
    log("TLS: the script needs tls = { cert = ..., key = ... }")
    os.exit(4)
  end
  local params = {
    mode = "server",
    protocol = t.protocol or "any",
    options = t.options or { "all", "no_sslv2", "no_sslv3" },
    certificate = t.cert,
    key = t.key,
    cafile = t.cafile,
    verify = t.verify or "none",
    ciphers = t.ciphers,
  }
  local ctx, err = ssl.newcontext(params)
  if not ctx then
    log("TLS: cannot make the context: ", tostring(err))
    os.exit(4)
  end
  ssl_ctx = { ssl = ssl, ctx = ctx }
  return ssl_ctx
end

-- Wraps the connection in TLS and runs the handshake (bounded by the
-- script's deadline).  Returns true, or nil after logging the error.
function Conn:starttls()
  local tls = tls_context()
  if #self.buf > 0 then
    log("TLS: discarded ", #self.buf, " bytes read ahead")
  end
  self.buf = ""
  local conn, err = tls.ssl.wrap(self.sock, tls.ctx)
  if not conn then
    log("TLS: handshake failed: ", tostring(err))
    return nil
  end
  self.sock = conn
  while true do
    local left = remaining()
    if left <= 0 then timed_out() end
    conn:settimeout(math.min(left, 0.5))
    local ok, herr = conn:dohandshake()
    if ok then break end
    if not would_block(herr) then
      log("TLS: handshake failed: ", tostring(herr))
      self.eof = true
      return nil
    end
  end
  local proto = conn.info and conn:info("protocol") or nil
  log("TLS: handshake ok ", tostring(proto or ""))
  local cert = conn.getpeercertificate and conn:getpeercertificate()
  if cert then
    local cn
    for _, e in ipairs(cert:subject() or {}) do
      if e.name == "commonName" or e.oid == "2.5.4.3" then cn = e.value end
    end
    log("TLS: client certificate CN=", tostring(cn))
  end
  return true
end

-- close with SO_LINGER 0; through TLS the option is set on the descriptor
function Conn:reset()
  pcall(function()
    if self.sock == self.raw then
      self.sock:setoption("linger", { on = true, timeout = 0 })
    else
      local t = socket.tcp()
      t:close()
      t:setfd(self.sock:getfd())
      t:setoption("linger", { on = true, timeout = 0 })
      t:setfd(-1)
    end
  end)
end

local function sleep(seconds)
  local left = remaining()
  if left <= 0 then timed_out() end
  if seconds > left then
    socket.sleep(left)
    timed_out()
  end
  socket.sleep(seconds)
end

---------------------------------------------------------------------------
-- run one connection; returns when it is over
---------------------------------------------------------------------------

local function run_steps(c)
  if script.implicit_tls and not c:starttls() then return "gone" end
  for n, st in ipairs(steps) do
    if st.send ~= nil or st.sendfn ~= nil then
      local bytes = st.send
      if st.sendfn ~= nil then
        local fn = assert(load_chunk(st.sendfn, "=sendfn"))
        bytes = fn()
      end
      if not c:send(tostring(bytes)) then return "gone" end
    elseif st.expect ~= nil then
      local line = c:line()
      if line == nil then
        log("EOF: expected ", st.expect, " (step ", n, ")")
        return "gone"
      end
      if not line:find(st.expect) then
        c:send("500 5.5.2 unexpected\r\n")
        log("MISMATCH: ", line)
        return "mismatch"
      end
    elseif st.read ~= nil then
      local ok
      if st.read == "line" then
        ok = c:line() ~= nil
      elseif st.read == "data" then
        ok = c:data() ~= nil
      elseif st.read == "all" then
        ok = c:all()
      else
        error("unknown read mode " .. tostring(st.read))
      end
      if not ok then return "gone" end
    elseif st.sleep ~= nil then
      sleep(st.sleep)
    elseif st.trickle ~= nil then
      local s, interval = st.trickle, st.interval or 0.05
      for i = 1, #s do
        if i > 1 then sleep(interval) end
        if not c:send(s:sub(i, i)) then return "gone" end
      end
    elseif st.close then
      return "closed"
    elseif st.reset then
      c:reset()
      return "closed"
    elseif st.starttls then
      if not c:starttls() then return "gone" end
    else
      error("unknown step #" .. n)
    end
  end
  return "done"
end

for _ = 1, connections do
  local left = remaining()
  if left <= 0 then timed_out() end
  server:settimeout(left)
  local sock = server:accept()
  if not sock then timed_out() end
  local c = Conn.new(sock)
  local how = run_steps(c)
  if how == "done" then c:all() end
  c.sock:close()
end

server:close()
record:close()
os.exit(0)
