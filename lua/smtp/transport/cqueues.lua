-- The cqueues transport (smtp.send{ transport = "cqueues", ... } in a
-- coroutine run by a cqueues controller): a cqueues socket, whose every
-- wait yields to the controller, which polls for it with its own timers.
-- TLS is cqueues' socket:starttls with a luaossl context. It speaks the
-- transport interface of smtp.transport:
--   send(s, i) -> n | nil, code, msg      receive() -> bytes | nil, code, msg
--   starttls(opts) -> true | nil, code, msg
--   settimeouts(timeout, deadline)        close()      tls_info()
--   peername()   peer_certificate()
-- with codes timeout, closed, connect, tls, io.
--
-- Time: timeout is seconds per operation (connect, each wait for data,
-- each write, the handshake); deadline an absolute time on
-- smtp.core.now()'s clock. Each operation gets the smaller of the two as
-- the cqueues timeout of its wait. Host names are resolved by cqueues'
-- own resolver, which yields too.
local core = require "smtp.core"
local tls_lua = require "smtp.transport.tls_lua"
local transport = require "smtp.transport"
local host_port, port_number = transport.host_port, transport.port_number

local M = {}

local RECV_SIZE = 16384

local cqueues, csocket, errno

local function load()
  if cqueues then return true end
  local ok, mod = pcall(require, "cqueues")
  if not ok then
    return nil, "transport \"cqueues\" needs the cqueues module: " .. tostring(mod):match("^[^\n]*")
  end
  cqueues, csocket, errno = mod, require "cqueues.socket", require "cqueues.errno"
  return true
end

-- Errors are returned, never raised (cqueues' default handler raises most).
local function returned(_, _, why) return why end

local Cq = {}
Cq.__index = Cq

-- Seconds left for the next operation (nil: no limit), or false when the
-- deadline has passed.
function Cq:_left()
  local left
  if self.timeout and self.timeout > 0 then left = self.timeout end
  if self.deadline then
    local d = self.deadline - core.now()
    if d <= 0 then return false end
    if not left or d < left then left = d end
  end
  return left
end

function Cq:settimeouts(timeout, deadline)
  self.timeout, self.deadline = timeout, deadline
end

-- An errno as a transport code and text, in the C transport's words.
local function failure(why, what)
  if why == errno.ETIMEDOUT then return "timeout", nil end
  if why == errno.EPIPE or why == errno.ECONNRESET then
    return "closed", "connection closed by peer (" .. errno.strerror(why) .. ")"
  end
  return "io", what .. ": " .. (type(why) == "number" and errno.strerror(why) or tostring(why))
end

function Cq:send(s, i)
  i = i or 1
  if self.closed then return nil, "closed", "connection is closed" end
  if #s < i then return 0 end
  local left = self:_left()
  if left == false then return nil, "timeout", "timed out sending data" end
  local ok, why = self.sock:xwrite(i == 1 and s or s:sub(i), "bn", left)
  if ok then
    left = self:_left()
    if left == false then ok, why = nil, errno.ETIMEDOUT else ok, why = self.sock:flush("n", left) end
  end
  if not ok then
    local code, msg = failure(why, "send")
    return nil, code, msg or "timed out sending data"
  end
  return #s - i + 1
end

-- Whatever bytes are there (at most 16 KiB), waiting for at least one.
function Cq:receive()
  if self.closed then return nil, "closed", "connection closed by peer" end
  local left = self:_left()
  if left == false then return nil, "timeout", "timed out waiting for data" end
  local data, why = self.sock:xread(-RECV_SIZE, "b", left)
  if data then return data end
  if not why then return nil, "closed", "connection closed by peer" end
  local code, msg = failure(why, "recv")
  return nil, code, msg or "timed out waiting for data"
end

-- A luaossl context as smtp.transport.tls_lua says (verification checked
-- after the handshake).
local function context(opts, verify)
  local sslctx = require "openssl.ssl.context"
  local ctx = sslctx.new("TLS", false)
  -- distinct bits: a sum works without bit operators (Lua 5.1)
  ctx:setOptions(sslctx.OP_NO_SSLv3 + sslctx.OP_NO_TLSv1 + sslctx.OP_NO_TLSv1_1 + sslctx.OP_NO_COMPRESSION)
  ctx:setVerify(sslctx.VERIFY_NONE)
  if verify then
    local store = require("openssl.x509.store").new()
    if opts.cafile or opts.capath then
      if opts.cafile then store:add(opts.cafile) end
      if opts.capath then store:add(opts.capath) end
    else
      store:addDefaults()
    end
    ctx:setStore(store)
  end
  if opts.cert then
    local function slurp(path)
      local f = assert(io.open(path, "rb"))
      local s = f:read("*a")
      f:close()
      return s
    end
    ctx:setCertificate(require("openssl.x509").new(slurp(opts.cert)))
    ctx:setPrivateKey(require("openssl.pkey").new(slurp(opts.key or opts.cert)))
  end
  return ctx
end

function Cq:starttls(opts)
  opts = opts or {}
  if self.closed then return nil, "closed", "connection is closed" end
  local verify = opts.verify and true or false
  local name = opts.servername
  if name == "" then name = nil end
  if verify and not name then
    self:close()
    return nil, "tls", "no server name to verify"
  end
  local made, ctx = pcall(context, opts, verify)
  if not made then
    self:close()
    return nil, "tls", tostring(ctx)
  end
  local ssl = require("openssl.ssl").new(ctx)
  if name and not tls_lua.ip_literal(name) then ssl:setHostName(name) end
  local left = self:_left()
  if left == false then
    self:close()
    return nil, "timeout", "timed out during TLS handshake"
  end
  local ok, why = self.sock:starttls(ssl, left)
  if not ok then
    self:close()
    if why == errno.ETIMEDOUT then return nil, "timeout", "timed out during TLS handshake" end
    if why == errno.EPIPE or why == errno.ECONNRESET or why == nil then
      return nil, "closed", "connection closed by peer without TLS close_notify"
    end
    return nil, "tls", "TLS handshake failed: " .. (type(why) == "number" and errno.strerror(why) or tostring(why))
  end
  self.ssl = ssl
  if verify then
    local vcode, vtext = ssl:getVerifyResult()
    local cok, code, msg = tls_lua.check(vcode == 0, vtext, self:peer_certificate(), name)
    if not cok then
      self:close()
      return nil, code, msg
    end
  end
  self.tls = true
  return true
end

function Cq:tls_info()
  if not self.ssl then return nil end
  local info = self.ssl:getCipherInfo() or {}
  -- luaossl gives the protocol's number: OpenSSL's names for it
  local v = self.ssl:getVersion()
  local names = { [0x0301] = "TLSv1", [0x0302] = "TLSv1.1", [0x0303] = "TLSv1.2", [0x0304] = "TLSv1.3" }
  return names[v] or tostring(v), info.name, false
end

-- For the send report (smtp.report): "address:port" connected to, and the
-- server's certificate (DER) once TLS is up.
function Cq:peername()
  if self.path then return self.peer end
  local _, addr, port = self.sock:peername()
  if type(addr) ~= "string" then return self.peer end
  return host_port(addr, port)
end

function Cq:peer_certificate()
  local cert = self.ssl and self.ssl:getPeerCertificate()
  return cert and cert:tostring("DER") or nil
end

function Cq:close()
  if not self.closed then
    self.closed = true
    self.sock:close()
  end
  return true
end

-- host, port; timeout, deadline as in settimeouts; opts: { path = a Unix
-- socket }.
function M.connect(host, port, timeout, deadline, opts)
  local ok, why = load()
  if not ok then return nil, "connect", why end
  if not cqueues.running() then
    return nil, "connect", "transport \"cqueues\" must run in a coroutine of a cqueues controller (cq:wrap)"
  end
  local path = opts and opts.path
  local nport = path and 0 or port_number(port)
  if not nport then return nil, "connect", "invalid port " .. tostring(port) end
  local self = setmetatable({ timeout = timeout, deadline = deadline, closed = false, tls = false, path = path,
    peer = path and ("unix:" .. path) or host_port(host, nport),
  }, Cq)
  local left = self:_left()
  if left == false then return nil, "timeout", "connect to " .. self.peer .. ": timed out" end
  local sock, err
  if path then
    sock, err = csocket.connect{ path = path }
  else
    sock, err = csocket.connect{ host = host, port = nport, nodelay = true }
  end
  if not sock then
    return nil, "connect", "connect to " .. self.peer .. ": " .. errno.strerror(err)
  end
  sock:onerror(returned)
  sock:setmode("bn", "bn")
  self.sock = sock
  local cok, cwhy = sock:connect(left)
  if not cok then
    sock:close()
    self.closed = true
    if cwhy == errno.ETIMEDOUT then return nil, "timeout", "connect to " .. self.peer .. ": timed out" end
    return nil, "connect", "connect to " .. self.peer .. ": " ..
      (type(cwhy) == "number" and errno.strerror(cwhy) or tostring(cwhy))
  end
  return self
end

M.Cq = Cq
return M
