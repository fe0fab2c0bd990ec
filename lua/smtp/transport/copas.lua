-- The copas transport (smtp.send{ transport = "copas", ... } inside a
-- copas thread): a LuaSocket socket in non-blocking mode; whenever it would
-- block, the thread waits in copas's loop for the socket instead of
-- blocking the process, so other copas threads go on. TLS is LuaSec's.
-- It speaks the transport interface of smtp.transport:
--   send(s, i) -> n | nil, code, msg      receive() -> bytes | nil, code, msg
--   starttls(opts) -> true | nil, code, msg
--   settimeouts(timeout, deadline)        close()      tls_info()
--   peername()   peer_certificate()
-- with codes timeout, closed, connect, tls, io.
--
-- Only the part of copas's API that every version has is used: addthread,
-- receive and send (to wait for a socket: the thread waits on a stand-in
-- object whose first try says "not yet", so copas parks it until the socket
-- is ready), and, where the copas has them (1.2.1 and later), sleep and
-- wakeup. Debian's copas (package 1.2.0, module 1.1.7) has no timers:
-- every wait for a reply checks its time each time the loop selects (the
-- stand-in's dirty(), which LuaSocket's select calls), so timeouts fire at
-- the loop's next turn after they are due, which comes soon when the loop
-- runs with a timeout (copas.loop(0.1), copas.step(0.1)); a wait for
-- writing is checked the same way (see _park). Where copas has
-- timers, a watchdog thread per connection sleeps until the current
-- operation is due, so the loop turns then whatever its timeout, and a
-- wait for the socket to drain ends by shutting the socket down.
--
-- Time: timeout is seconds per operation (connect, each wait for data,
-- each write, the handshake); deadline an absolute time on
-- smtp.core.now()'s clock. Host names are resolved with LuaSocket's
-- getaddrinfo, which blocks (as in copas itself); every address is tried
-- in turn.
local core = require "smtp.core"
local tls_lua = require "smtp.transport.tls_lua"
local transport = require "smtp.transport"
local host_port, port_number = transport.host_port, transport.port_number

local M = {}

local RECV_SIZE = 16384

local socket, copas

local function load()
  if copas then return true end
  local ok, mod = pcall(require, "copas")
  if not ok then
    return nil, "transport \"copas\" needs the copas module: " .. tostring(mod):match("^[^\n]*")
  end
  copas, socket = mod, require "socket"
  return true
end

-- The thread that runs the send must be a coroutine (copas parks it by
-- yielding); on the main thread a yield would only raise.
local function in_coroutine()
  local co, main = coroutine.running()
  return co ~= nil and not main
end

-- LuaSocket / LuaSec error strings as transport codes and texts, in the C
-- transport's words.
local function failure(err, what)
  if err == "closed" then return "closed", "connection closed by peer" end
  if err == "connection reset by peer" or err == "broken pipe" or err == "Broken pipe" then
    return "closed", "connection closed by peer (" .. err .. ")"
  end
  return "io", what .. ": " .. tostring(err)
end

-- ---- waiting ----------------------------------------------------------------

-- The stand-in copas waits on: LuaSocket's select takes any object with
-- getfd() (and dirty()). receive/send say "timeout" on the first call, so
-- copas parks the thread in its read or write set, and "ready" on the next,
-- when the loop found the socket ready. close: copas 1.x closes the object
-- a finished thread was last resumed for; the socket is not its to close.
local Waiter = {}
Waiter.__index = Waiter

function Waiter:getfd() return self.t:_fd() end

-- Called by select on every turn of the loop: true when the operation is
-- due (the thread is resumed and finds out), or when TLS holds bytes
-- already read (nothing would make the socket readable for them).
function Waiter:dirty()
  local t = self.t
  if t.due and core.now() >= t.due then return true end
  if self.write_poll then
    -- a wait for writing parked with the readers (a copas without timers)
    local _, writable = socket.select(nil, { self }, 0)
    if writable and writable[1] then return true end
  end
  return t.conn ~= nil and t.conn.dirty ~= nil and t.conn:dirty() or false
end

function Waiter:_once()
  if self.fresh then
    self.fresh = false
    return nil, "timeout", 0
  end
  return true
end
Waiter.receive = Waiter._once
Waiter.send = Waiter._once
function Waiter.close() end
function Waiter.settimeout() end

local Copas = {}
Copas.__index = Copas

function Copas:_fd()
  local s = self.conn or self.sock
  return s and s:getfd() or -1
end

-- Parks the thread until the socket is readable ("wantread") or writable.
-- On a copas without timers, a wait for writing is parked with the
-- readers too, where dirty() sees its time and polls for writability at
-- each turn of the loop: slower when the socket buffer is full, but bounded
-- by the timeout whatever the server does.
function Copas:_park(want)
  local w = self.waiter
  w.fresh = true
  if want == "wantwrite" and self.wd then
    copas.send(w, "x")
  else
    w.write_poll = want == "wantwrite"
    copas.receive(w, RECV_SIZE)
    w.write_poll = false
  end
end

-- The watchdog (copas with timers only): sleeps until the operation in
-- progress is due, then wakes the loop; a wait for writing is ended by
-- shutting the socket down (readiness with an error), since select asks
-- dirty() of readers only.
-- copas 3 and later call them pause(s) and pauseforever(); sleep(-1) is
-- the older spelling of the latter.
local function nap(seconds)
  if copas.pause then return copas.pause(seconds) end
  return copas.sleep(seconds)
end

local function hibernate()
  if copas.pauseforever then return copas.pauseforever() end
  return copas.sleep(-1)
end

local function watchdog(self)
  while not self.closed do
    local due = self.due
    if not due then
      self.wd_at = nil
      hibernate()
    else
      local left = due - core.now()
      if left <= 0 then
        if self.due == due and self.waiting == "wantwrite" then self:_shutdown() end
        if self.due == due then self.wd_at = nil; hibernate() end
      else
        self.wd_at = due
        nap(left)
      end
    end
  end
end

function Copas:_shutdown()
  self.expired = true
  if self.conn then
    -- LuaSec owns the descriptor; the plain socket object lends it for the
    -- shutdown only (it must not close it later).
    local fd = self.conn:getfd()
    if fd and fd >= 0 and self.sock.setfd then
      self.sock:setfd(fd)
      pcall(self.sock.shutdown, self.sock, "both")
      self.sock:setfd(-1)
    end
  elseif self.sock then
    pcall(self.sock.shutdown, self.sock, "both")
  end
end

-- Arms the limits for one operation; false when the deadline has passed.
function Copas:_arm()
  local due
  if self.timeout and self.timeout > 0 then due = core.now() + self.timeout end
  if self.deadline and (not due or self.deadline < due) then due = self.deadline end
  if due and due <= core.now() then return false end
  self.due = due or math.huge
  if self.wd and (self.wd_at == nil or self.due < self.wd_at) and self.due < math.huge then
    copas.wakeup(self.wd)
  end
  return true
end

-- Runs step() until it returns a value, parking the thread whenever it says
-- "wantread"/"wantwrite"/"timeout". Returns the value, or nil, "timeout",
-- or nil, "error", err.
function Copas:_run(step)
  if not self:_arm() then return nil, "timeout" end
  local r, err
  while true do
    r, err = step()
    if r ~= nil then break end
    if self.expired or core.now() >= self.due then err = "timeout"; break end
    if err ~= "wantread" and err ~= "wantwrite" and err ~= "timeout" then break end
    self.waiting = err == "wantwrite" and "wantwrite" or "wantread"
    self:_park(self.waiting)
    self.waiting = nil
  end
  self.due = nil
  if r ~= nil then return r end
  if err == "timeout" or self.expired then return nil, "timeout" end
  return nil, "error", err
end

function Copas:settimeouts(timeout, deadline)
  self.timeout, self.deadline = timeout, deadline
end

-- ---- I/O ----------------------------------------------------------------------

function Copas:send(s, i)
  i = i or 1
  if self.closed then return nil, "closed", "connection is closed" end
  if #s < i then return 0 end
  local pos, sock = i, self.conn or self.sock
  local r, why, err = self:_run(function()
    local last, serr, partial = sock:send(s, pos)
    if last then pos = last + 1 return true end
    if partial and partial >= pos then pos = partial + 1 end
    if pos > #s then return true end
    if serr == "timeout" then serr = "wantwrite" end
    return nil, serr
  end)
  if not r then
    if why == "timeout" then return nil, "timeout", "timed out sending data" end
    return nil, failure(err, "send")
  end
  return #s - i + 1
end

-- Whatever bytes are there (at most 16 KiB), waiting for at least one.
function Copas:receive()
  if self.closed or self.eof then return nil, "closed", "connection closed by peer" end
  local sock = self.conn or self.sock
  local r, why, err = self:_run(function()
    local data, rerr, partial = sock:receive(RECV_SIZE)
    if data then return data end
    if partial and partial ~= "" then
      if rerr == "closed" then self.eof = true end
      return partial
    end
    if rerr == "timeout" then rerr = "wantread" end
    return nil, rerr
  end)
  if not r then
    if why == "timeout" then return nil, "timeout", "timed out waiting for data" end
    return nil, failure(err, "recv")
  end
  return r
end

-- TLS on the connected socket (after "220" to STARTTLS, or right after
-- connect for implicit TLS), with LuaSec: see smtp.transport.tls_lua.
function Copas:starttls(opts)
  opts = opts or {}
  if self.closed then return nil, "closed", "connection is closed" end
  local has_ssl, ssl = pcall(require, "ssl")
  if not has_ssl then
    self:close()
    return nil, "tls", "TLS with transport \"copas\" needs LuaSec (the ssl module)"
  end
  local verify = opts.verify and true or false
  local name = opts.servername
  if name == "" then name = nil end
  if verify and not name then
    self:close()
    return nil, "tls", "no server name to verify"
  end
  local cafile, capath
  if verify then cafile, capath = tls_lua.trust(opts) end
  local conn, werr = ssl.wrap(self.sock, {
    mode = "client", protocol = "any",
    options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1", "no_compression" },
    verify = "none", cafile = cafile, capath = capath,
    certificate = opts.cert, key = opts.key or (opts.cert and opts.cert),
  })
  if not conn then
    self:close()
    return nil, "tls", tostring(werr)
  end
  self.conn = conn
  conn:settimeout(0)
  if name and not tls_lua.ip_literal(name) then conn:sni(name) end
  local ok, why, err = self:_run(function()
    local done, herr = conn:dohandshake()
    if done then return true end
    return nil, herr
  end)
  if not ok then
    self:close()
    if why == "timeout" then return nil, "timeout", "timed out during TLS handshake" end
    if err == "closed" then return nil, "closed", "connection closed by peer without TLS close_notify" end
    return nil, "tls", "TLS handshake failed: " .. tostring(err)
  end
  if verify then
    local vok, vwhy = conn:getpeerverification()
    if type(vwhy) == "table" then vwhy = vwhy[1] and (vwhy[1][1] or vwhy[1]) end
    local cok, code, msg = tls_lua.check(vok, vwhy, self:peer_certificate(), name)
    if not cok then
      self:close()
      return nil, code, msg
    end
  end
  self.tls = true
  return true
end

function Copas:tls_info()
  if not self.conn then return nil end
  local info = self.conn:info() or {}
  return info.protocol, info.cipher, false
end

-- For the send report (smtp.report): "address:port" connected to, and the
-- server's certificate (DER) once TLS is up.
function Copas:peername() return self.peer end

function Copas:peer_certificate()
  local cert = self.conn and self.conn:getpeercertificate()
  return cert and tls_lua.pem_to_der(cert:pem()) or nil
end

function Copas:close()
  if not self.closed then
    self.closed = true
    self.due = nil
    if self.conn then self.conn:close() end
    if self.sock then self.sock:close() end
    if self.wd then copas.wakeup(self.wd) end
  end
  return true
end

-- ---- connecting ----------------------------------------------------------------

-- One address: a connected socket, or nil, "timeout" | "error", err.
function Copas:_connect_one(family, addr, port)
  local sock, err = (family == "inet6" and socket.tcp6 or socket.tcp4)()
  if not sock then return nil, "error", err end
  sock:settimeout(0)
  self.sock = sock
  local first = true
  local r, why, cerr = self:_run(function()
    local ok, e = sock:connect(addr, port)
    if ok or (e == "already connected" and not first) then return true end
    first = false
    if e == "timeout" or e == "Operation already in progress" then return nil, "wantwrite" end
    return nil, e
  end)
  if not r then
    sock:close()
    self.sock = nil
    return nil, why, cerr
  end
  sock:setoption("tcp-nodelay", true)
  return sock
end

-- host, port; timeout, deadline as in settimeouts; opts: { path = } is not
-- supported here.
function M.connect(host, port, timeout, deadline, opts)
  local ok, why = load()
  if not ok then return nil, "connect", why end
  if not in_coroutine() then
    return nil, "connect", "transport \"copas\" must run inside a copas thread (copas.addthread)"
  end
  if opts and opts.path then
    return nil, "connect", "transport \"copas\" cannot connect to a Unix socket (path)"
  end
  local nport = port_number(port)
  if not nport then return nil, "connect", "invalid port " .. tostring(port) end
  local self = setmetatable({ timeout = timeout, deadline = deadline, closed = false, tls = false },
    Copas)
  self.waiter = setmetatable({ t = self }, Waiter)
  local addrs, rerr = socket.dns.getaddrinfo(host)
  if not addrs or #addrs == 0 then
    return nil, "connect", "cannot resolve host '" .. tostring(host) .. "': " .. tostring(rerr or "no addresses")
  end
  if copas.sleep and copas.wakeup then
    self.wd = copas.addthread(function() watchdog(self) end)
  end
  local last, code
  for _, a in ipairs(addrs) do
    local peer = host_port(a.addr, nport)
    local sock, cwhy, cerr = self:_connect_one(a.family, a.addr, nport)
    if sock then
      self.peer = peer
      return self
    end
    code = cwhy == "timeout" and "timeout" or "connect"
    last = "connect to " .. peer .. ": " .. (cwhy == "timeout" and "timed out" or tostring(cerr))
    if not self:_arm() then break end
    self.due = nil
  end
  self:close()
  if #addrs > 1 then
    last = (code == "timeout" and "timed out after " or "") .. #addrs .. " addresses tried, last: " .. last
  end
  return nil, code, last
end

M.Copas = Copas
return M
