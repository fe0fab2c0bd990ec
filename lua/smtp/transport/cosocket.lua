-- The OpenResty transport: an ngx.socket.tcp() cosocket. Every operation
-- yields to nginx's event loop instead of blocking the worker, so it may
-- only run where cosockets are enabled (rewrite, access, content, timer,
-- ssl_certificate, ...). It speaks the transport interface of
-- smtp.transport:
--   send(s, i) -> n | nil, code, msg      receive() -> bytes | nil, code, msg
--   starttls{ servername =, verify = } -> true | nil, code, msg
--   settimeouts(timeout, deadline)        close()
--   setkeepalive(timeout, size[, state]) -> true | nil, code, msg
--   getreusedtimes() -> n                 pooled_state() -> state | nil
-- with codes timeout, closed, connect, tls, io.
--
-- Time: timeout is seconds per operation (nil or <= 0: no per-operation
-- limit); deadline is an absolute time on smtp.core.now()'s monotonic
-- clock (nil: none). Both are turned into the millisecond timeouts nginx
-- wants right before each operation, so a long exchange cannot overrun the
-- deadline however many operations it takes.
local core = require "smtp.core"
local transport = require "smtp.transport"
local host_port, port_number = transport.host_port, transport.port_number

local M = {}

local RECV_SIZE = 16384
-- nginx refuses timeouts that do not fit a signed 32-bit number of ms.
local MAX_MS = 2147483647
-- "No limit" is not something nginx can express: 0 would mean "nginx's
-- default" (lua_socket_*_timeout, 60 s). This is about 24 days.
local NO_LIMIT_MS = MAX_MS

-- Phases where ngx.socket.tcp() is disabled (lua-nginx-module raises
-- "API disabled in the context of ...").
local disabled_phases = {
  init = true, init_worker = true, set = true, log = true,
  header_filter = true, body_filter = true, balancer = true,
  exit_worker = true, ssl_session_store = true,
}


local function phase_error(phase)
  return "cosockets are disabled in nginx's " .. tostring(phase) .. " phase; send mail" ..
    " from a timer instead: ngx.timer.at(0, function(premature) ... smtp.send{...} end)"
end

-- An nginx error string as a transport code.
local function code_of(err)
  if err == "timeout" then return "timeout" end
  if err == "closed" or (type(err) == "string" and
      (err:find("reset by peer", 1, true) or err:find("broken pipe", 1, true))) then
    return "closed"
  end
  return "io"
end

local Cosocket = {}
Cosocket.__index = Cosocket

-- Milliseconds left for the next operation, or nil when the deadline has
-- passed already.
function Cosocket:_ms()
  local ms = NO_LIMIT_MS
  local timeout, deadline = self.timeout, self.deadline
  if timeout and timeout > 0 then ms = timeout * 1000 end
  if deadline then
    local left = (deadline - core.now()) * 1000
    if left <= 0 then return nil end
    if left < ms then ms = left end
  end
  -- Round up (never wake before the deadline) and never pass 0, which
  -- nginx reads as "use the configured default".
  ms = math.ceil(ms)
  if ms < 1 then ms = 1 end
  if ms > MAX_MS then ms = MAX_MS end
  return ms
end

-- Applies the current limits to the cosocket; false when none is left.
function Cosocket:_arm()
  local ms = self:_ms()
  if not ms then return false end
  self.sock:settimeouts(ms, ms, ms)
  return true
end

function Cosocket:settimeouts(timeout, deadline)
  self.timeout = timeout
  self.deadline = deadline
end

-- Sends s from position i (1-based). Cosocket sends are all or nothing:
-- on success every remaining byte was written.
function Cosocket:send(s, i)
  i = i or 1
  if self.closed then return nil, "closed", "connection is closed" end
  local n = #s - i + 1
  if n <= 0 then return 0 end
  if not self:_arm() then return nil, "timeout", "deadline exceeded" end
  local ok, err = self.sock:send(i == 1 and s or s:sub(i))
  if not ok then
    local code = code_of(err)
    if code ~= "timeout" then self:close() end
    return nil, code, "send to " .. self.peer .. ": " .. tostring(err)
  end
  return n
end

-- Whatever bytes are available (at most 16 KiB), waiting for at least one.
function Cosocket:receive()
  if self.closed then return nil, "closed", "connection is closed" end
  if not self:_arm() then return nil, "timeout", "deadline exceeded" end
  local data, err = self.sock:receiveany(RECV_SIZE)
  if not data then
    local code = code_of(err)
    if code ~= "timeout" then self:close() end
    if code == "closed" then
      return nil, "closed", "connection closed by " .. self.peer
    end
    return nil, code, "receive from " .. self.peer .. ": " .. tostring(err)
  end
  return data
end

-- Client certificates (PEM files), parsed once per worker.
local client_certs = {}

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("*a")
  f:close()
  return data
end

function Cosocket:_clientcert(cert, key)
  if not (cert and key) then
    return nil, "a client certificate needs both cert and key"
  end
  if not self.sock.setclientcert then
    return nil, "this lua-nginx-module cannot send client certificates (needs 0.10.23 or later)"
  end
  local id = cert .. "\0" .. key
  local entry = client_certs[id]
  if not entry then
    local has_ssl, ssl = pcall(require, "ngx.ssl")
    if not has_ssl then return nil, "client certificates need lua-resty-core's ngx.ssl" end
    local cert_pem, cerr = read_file(cert)
    if not cert_pem then return nil, "cannot read cert: " .. tostring(cerr) end
    local key_pem, kerr = read_file(key)
    if not key_pem then return nil, "cannot read key: " .. tostring(kerr) end
    local c, perr = ssl.parse_pem_cert(cert_pem)
    if not c then return nil, "invalid cert " .. cert .. ": " .. tostring(perr) end
    local k, pkerr = ssl.parse_pem_priv_key(key_pem)
    if not k then return nil, "invalid key " .. key .. ": " .. tostring(pkerr) end
    entry = { cert = c, key = k }
    client_certs[id] = entry
  end
  return self.sock:setclientcert(entry.cert, entry.key)
end

-- An IP literal ("192.0.2.1", "::1", "[::1]") is never sent as SNI (RFC
-- 6066), as with the C transport. This only decides SNI: the name check is
-- smtp.core's, which tells addresses from host names itself.
local function ip_literal(name)
  return name:find(":", 1, true) ~= nil or name:match("^%[.*%]$") ~= nil or
    name:match("^%d+%.%d+%.%d+%.%d+$") ~= nil
end

-- OpenSSL's functions that read the server's certificate out of the TLS
-- session sslhandshake returns (lua-resty-core hands it over as a cdata
-- SSL_SESSION *), through LuaJIT's FFI: nginx links libssl, so ffi.C has
-- them. Looked up once per worker: a table, or false and why not.
local peer_api, peer_api_err

local function load_peer_api()
  if peer_api ~= nil then return peer_api, peer_api_err end
  peer_api = false
  local has_ffi, ffi = pcall(require, "ffi")
  if not has_ffi then
    peer_api_err = "LuaJIT's FFI is not available"
    return peer_api, peer_api_err
  end
  -- OpenSSL's own declarations and type names, one at a time: LuaJIT keeps
  -- the first declaration of a name and accepts repeats, so this and
  -- another library declaring the same (lua-resty-openssl) get along.
  for _, decl in ipairs({
    "typedef struct x509_st X509;",
    "typedef struct ssl_session_st SSL_SESSION;",
    "X509 *SSL_SESSION_get0_peer(SSL_SESSION *s);",
    "int i2d_X509(X509 *a, unsigned char **out);",
  }) do
    pcall(ffi.cdef, decl)
  end
  local found, get0_peer, i2d = pcall(function()
    return ffi.C.SSL_SESSION_get0_peer, ffi.C.i2d_X509
  end)
  if not found then
    peer_api_err = "OpenSSL's SSL_SESSION_get0_peer and i2d_X509 are not visible to LuaJIT's FFI" ..
      " in this nginx (" .. tostring(get0_peer) .. ")"
    return peer_api, peer_api_err
  end
  peer_api = { ffi = ffi, get0_peer = get0_peer, i2d = i2d }
  -- For the send report only (optional): the session's version and cipher.
  for _, decl in ipairs({
    "typedef struct ssl_cipher_st SSL_CIPHER;",
    "int SSL_SESSION_get_protocol_version(const SSL_SESSION *s);",
    "const SSL_CIPHER *SSL_SESSION_get0_cipher(const SSL_SESSION *s);",
    "const char *SSL_CIPHER_get_name(const SSL_CIPHER *c);",
  }) do
    pcall(ffi.cdef, decl)
  end
  pcall(function()
    peer_api.version = ffi.C.SSL_SESSION_get_protocol_version
    peer_api.cipher = ffi.C.SSL_SESSION_get0_cipher
    peer_api.cipher_name = ffi.C.SSL_CIPHER_get_name
  end)
  return peer_api
end

local TLS_VERSIONS = { [0x0301] = "TLSv1", [0x0302] = "TLSv1.1", [0x0303] = "TLSv1.2",
                       [0x0304] = "TLSv1.3" }

-- The version ("TLSv1.3") and cipher of a finished handshake's session, as
-- far as the FFI tells (nil when it cannot).
local function session_params(sess)
  local api = load_peer_api()
  if not (api and api.version and api.cipher_name) or type(sess) ~= "cdata" or sess == nil then
    return nil
  end
  local version = TLS_VERSIONS[tonumber(api.version(sess))]
  local c = api.cipher(sess)
  local name = c ~= nil and api.cipher_name(c)
  return version, (name ~= nil and name) and api.ffi.string(name) or nil
end

-- The server's certificate (DER) from the session of a finished handshake;
-- nil and why not.
local function peer_certificate(sess)
  local api, err = load_peer_api()
  if not api then return nil, err end
  -- a NULL session is a cdata too, and true in Lua; == nil tells
  if type(sess) ~= "cdata" or sess == nil then
    return nil, "nginx returned no TLS session (" .. type(sess) .. ") to read it from"
  end
  local x509 = api.get0_peer(sess)
  if x509 == nil then return nil, "the TLS session holds no server certificate" end
  local len = api.i2d(x509, nil)
  if len <= 0 then return nil, "i2d_X509 failed" end
  local buf = api.ffi.new("unsigned char[?]", len)
  local out = api.ffi.new("unsigned char *[1]", buf)
  if api.i2d(x509, out) ~= len then return nil, "i2d_X509 failed" end
  return api.ffi.string(buf, len)
end

-- TLS on the connected socket (after "220" to STARTTLS, or right after
-- connect for implicit TLS). opts.servername: SNI (host names only) and the
-- name checked against the certificate; opts.verify: check chain and name.
-- Inside nginx the trusted CAs are lua_ssl_trusted_certificate's (and the
-- chain depth lua_ssl_verify_depth's): opts.cafile and opts.capath cannot
-- be applied per connection and are not used. The name is checked by
-- smtp.core's rule (RFC 9525: subjectAltNames only, never the CN; an IP
-- address only against IP addresses), the C transport's, on the
-- certificate read back from the TLS session; nginx's own, looser check
-- runs first for host names. opts.cert/opts.key: a client certificate
-- (PEM files).
function Cosocket:starttls(opts)
  opts = opts or {}
  if self.closed then return nil, "closed", "connection is closed" end
  if not self:_arm() then return nil, "timeout", "deadline exceeded" end
  local verify = opts.verify and true or false
  local name = opts.servername
  if name == "" then name = nil end
  if verify and not name then
    self:close()
    return nil, "tls", "TLS handshake with " .. self.peer .. " refused: no server name to verify"
  end
  if opts.cert or opts.key then
    local ok, err = self:_clientcert(opts.cert, opts.key)
    if not ok then
      self:close()
      return nil, "tls", "client certificate: " .. tostring(err)
    end
  end
  -- Without a server name nginx checks the chain only; an IP address goes
  -- that way (nginx would check it as a DNS name), the check below decides.
  local sni = name
  if name and ip_literal(name) then sni = nil end
  -- reused_session must be nil, never false: with false, Debian's
  -- lua-resty-core 0.1.25 can report a failed verification as success, and
  -- no session would come back to read the certificate from. It can also
  -- raise "assertion failed!" instead of returning an error when
  -- verification fails (openresty/lua-resty-core#499): pcall it.
  local ok, sess, err = pcall(self.sock.sslhandshake, self.sock, nil, sni, verify)
  if not ok then
    self:close()
    return nil, "tls", "TLS handshake with " .. self.peer .. " failed: " .. tostring(sess)
  end
  if not sess then
    self:close()
    if err == "timeout" then
      return nil, "timeout", "TLS handshake with " .. self.peer .. ": timed out"
    end
    local msg = "TLS handshake with " .. self.peer .. " failed: " .. tostring(err)
    -- chain errors ("20: unable to get local issuer certificate", ...)
    if verify and type(err) == "string" and err:match("^%d+: ") then
      msg = msg .. " (inside nginx the trusted CAs are set with lua_ssl_trusted_certificate" ..
        " and lua_ssl_verify_depth" .. ((opts.cafile or opts.capath) and "; cafile/capath are not used" or "") .. ")"
    end
    return nil, "tls", msg
  end
  -- The certificate for the send report (and the name check).
  local der, why = peer_certificate(sess)
  self._peer_der = der
  self._tls_version, self._tls_cipher = session_params(sess)
  if verify then
    -- Fails closed: no certificate to check is a failed check.
    local matched, _, msg
    if not der then
      msg = "cannot check the certificate name: " .. tostring(why)
    elseif not core.tls_check_name then
      msg = "cannot check the certificate name: this smtp.core has no tls_check_name"
    else
      matched, _, msg = core.tls_check_name(der, name)
    end
    if not matched then
      self:close()
      return nil, "tls", "TLS handshake with " .. self.peer .. " failed: " .. tostring(msg)
    end
  end
  self.tls = true
  return true
end

-- For the send report: the TLS version and cipher, as the C socket's.
function Cosocket:tls_info()
  if not self.tls then return nil end
  return self._tls_version, self._tls_cipher, false
end

-- The server's certificate (DER) from the handshake, or nil.
function Cosocket:peer_certificate()
  return self._peer_der
end

-- "address:port" when the host was an address (nginx does not say which
-- address a name resolved to); nil otherwise.
function Cosocket:peername()
  if not self.address then return nil end
  return host_port(self.address, self.port)
end

function Cosocket:close()
  if not self.closed then
    self.closed = true
    self.sock:close()
  end
  return true
end

-- What a session remembers about a pooled connection (its EHLO
-- capabilities, TLS, authentication: a string the session encodes) travels
-- with that connection itself, never with the pool's name: servers behind
-- one name may differ, and a name says nothing about which of its
-- connections is which. lua-nginx-module (0.10.18 and later) can attach
-- key/value pairs of 64-bit numbers to a cosocket's connection that stay
-- with it through the pool (ngx_http_lua_ffi_socket_tcp_*_udata, an
-- undocumented FFI API; Debian's 0.10.23 has it); they are allocated from
-- the connection's own memory pool and freed with the connection, so
-- nothing outlives it and nothing needs sweeping. The state is cut into
-- 8-octet values under consecutive keys, its length under the first.
local UDATA_KEY = 0x4C534D54 * 65536   -- "LSMT" << 16: below 2^53, exact as a Lua number
local MAX_STATE = 2048                 -- octets; a longer state is not pooled
local udata_api, udata_err

local function load_udata_api()
  if udata_api ~= nil then return udata_api, udata_err end
  udata_api = false
  local has_ffi, ffi = pcall(require, "ffi")
  if not has_ffi then
    udata_err = "LuaJIT's FFI is not available"
    return udata_api, udata_err
  end
  for _, decl in ipairs({
    "typedef struct ngx_http_lua_socket_tcp_upstream_s ngx_http_lua_socket_tcp_upstream_t;",
    "int ngx_http_lua_ffi_socket_tcp_init_udata_queue(ngx_http_lua_socket_tcp_upstream_t *u," ..
      " int capacity, char **err_msg);",
    "int ngx_http_lua_ffi_socket_tcp_add_udata(ngx_http_lua_socket_tcp_upstream_t *u, uint64_t key," ..
      " uint64_t value, uint64_t *evicted_key, uint64_t *evicted_value, char **err_msg);",
    "int ngx_http_lua_ffi_socket_tcp_get_udata(ngx_http_lua_socket_tcp_upstream_t *u, uint64_t key," ..
      " uint64_t *value, char **err_msg);",
  }) do
    pcall(ffi.cdef, decl)
  end
  local found, init = pcall(function()
    local C = ffi.C
    return { C.ngx_http_lua_ffi_socket_tcp_init_udata_queue, C.ngx_http_lua_ffi_socket_tcp_add_udata,
             C.ngx_http_lua_ffi_socket_tcp_get_udata }
  end)
  if not found then
    udata_err = "this lua-nginx-module cannot keep data with a pooled connection" ..
      " (ngx_http_lua_ffi_socket_tcp_*_udata: 0.10.18 or later): " .. tostring(init)
    return udata_api, udata_err
  end
  udata_api = { ffi = ffi, init = init[1], add = init[2], get = init[3],
                value = ffi.new("uint64_t[1]"), evicted = ffi.new("uint64_t[2]"),
                err = ffi.new("char *[1]") }
  return udata_api
end

-- The connection's upstream structure (what lua-resty-core hands its FFI
-- calls: the userdata at index 1 of the cosocket table).
local function upstream(sock)
  local u = type(sock) == "table" and rawget(sock, 1)
  if type(u) ~= "userdata" then return nil end
  return u
end

-- Attaches state (a string) to the connection: true, or nil and why not.
local function attach_state(sock, state)
  local api, err = load_udata_api()
  if not api then return nil, err end
  local u = upstream(sock)
  if not u then return nil, "no cosocket upstream to attach the state to" end
  local ffi = api.ffi
  if api.init(u, 0, api.err) == -1 then
    return nil, "udata: " .. ffi.string(api.err[0])
  end
  local n = #state
  local function put(k, v)
    if api.add(u, UDATA_KEY + k, v, api.evicted, api.evicted + 1, api.err) == -1 then
      return nil, "udata: " .. ffi.string(api.err[0])
    end
    return true
  end
  local ok, perr = put(0, n)
  if not ok then return nil, perr end
  for k = 1, math.ceil(n / 8) do
    local piece = state:sub(k * 8 - 7, k * 8)
    api.value[0] = 0
    ffi.copy(api.value, piece, #piece)
    ok, perr = put(k, api.value[0])
    if not ok then return nil, perr end
  end
  return true
end

-- The state attached to the connection, or nil.
local function attached_state(sock)
  local api = load_udata_api()
  local u = api and upstream(sock)
  if not u then return nil end
  local ffi = api.ffi
  local function get(k)
    if api.get(u, UDATA_KEY + k, api.value, api.err) ~= 0 then return nil end
    return api.value[0]
  end
  local len = get(0)
  if not len then return nil end
  local n = tonumber(len)
  if n > MAX_STATE then return nil end
  local parts = {}
  for k = 1, math.ceil(n / 8) do
    if not get(k) then return nil end
    parts[k] = ffi.string(ffi.cast("const char *", api.value), 8)
  end
  return table.concat(parts):sub(1, n)
end

-- Puts the connection into nginx's per-worker pool (the pool chosen at
-- connect). timeout: seconds the connection may stay idle there (nil:
-- lua_socket_keepalive_timeout); size: the pool's size (nil:
-- lua_socket_pool_size); state: a string (at most 2048 octets) kept with
-- this very connection and handed back by its pooled_state() when it is
-- taken from the pool again. The object is unusable afterwards either way.
-- nginx refuses (and we close) a connection with unread input; a state that
-- cannot be kept closes the connection too (it could not be resumed).
function Cosocket:setkeepalive(timeout, size, state)
  if self.closed then return nil, "closed", "connection is closed" end
  local ms
  if timeout ~= nil then
    ms = math.ceil(timeout * 1000)
    if ms < 0 then ms = 0 end
    if ms > MAX_MS then ms = MAX_MS end
  end
  -- Always written (an empty state when none is given), so that what an
  -- earlier user of the connection left is never taken for this one's.
  state = state or ""
  if type(state) ~= "string" then
    error("smtp: the state kept with a pooled connection must be a string", 2)
  end
  local kept, why
  if #state > MAX_STATE then
    why = "state of " .. #state .. " octets is too long to keep with the connection"
  else
    kept, why = attach_state(self.sock, state)
  end
  if not kept then
    self:close()
    return nil, "io", "setkeepalive: " .. tostring(why) .. "; connection closed"
  end
  self.closed = true
  local ok, err = self.sock:setkeepalive(ms, size)
  if not ok then
    self.sock:close()
    return nil, code_of(err), "setkeepalive: " .. tostring(err)
  end
  return true
end

-- How often this connection was taken from the pool: 0 for a fresh one.
-- A reused connection has already been greeted, said EHLO and (if it was
-- pooled after TLS) negotiated TLS: the session must not do that again.
function Cosocket:getreusedtimes()
  if self.closed then return 0 end
  return self.sock:getreusedtimes() or 0
end

-- The state given to setkeepalive() for this connection, when it came from
-- the pool; nil for a fresh connection (or one pooled without a state).
function Cosocket:pooled_state()
  if self:getreusedtimes() == 0 then return nil end
  local state = attached_state(self.sock)
  if state == "" then return nil end
  return state
end

-- The pool name: connections are shared only by sessions whose identity
-- options (smtp.options: server, TLS checks, EHLO name, credentials ...)
-- are all equal. opts: the caller's options; resolved: the values connect
-- worked out (host, port, tls, servername, helo). Secrets only enter it hashed.
function M.pool_name(opts, resolved)
  local ngx = ngx
  return require("smtp.options").pool_key(opts, resolved, function(secrets)
    return ngx.encode_base64(ngx.sha1_bin(secrets))
  end)
end

-- host, port (number or well-known service name); timeout, deadline as
-- in settimeouts; opts: { pool = name, pool_size = n, backlog = n,
-- fresh = true (never a pooled connection) }.
-- The pool name must tell apart connections that are not interchangeable
-- (TLS or not, server name, EHLO name, authenticated user); without one
-- nginx pools by "host:port".
function M.connect(host, port, timeout, deadline, opts)
  local ngx = ngx
  local phase = ngx.get_phase and ngx.get_phase()
  if disabled_phases[phase] then
    return nil, "connect", phase_error(phase)
  end
  local created, sock = pcall(ngx.socket.tcp)
  if not created then
    return nil, "connect", phase_error(phase) .. " (" .. tostring(sock) .. ")"
  end
  local path = opts and opts.path
  local nport = path and 0 or port_number(port)
  if not nport then
    return nil, "connect", "invalid port " .. tostring(port)
  end
  local self = setmetatable({
    sock = sock, timeout = timeout, deadline = deadline, closed = false, tls = false,
    peer = path and ("unix:" .. path) or (host .. ":" .. nport),
  }, Cosocket)
  if not self:_arm() then
    sock:close()
    return nil, "timeout", "connect to " .. self.peer .. ": deadline exceeded"
  end
  -- Host names need a `resolver` in nginx.conf; "localhost" (the library's
  -- default host) is common enough to spare users that.
  local target = host == "localhost" and "127.0.0.1" or host
  if not path and (target:match("^%d+%.%d+%.%d+%.%d+$") or target:find(":", 1, true)) then
    self.address, self.port = target:match("^%[(.*)%]$") or target, nport
  end
  -- nginx's own default pool name
  self.pool = (opts and opts.pool) or (target .. ":" .. nport)
  local function attempt()
    if path then return sock:connect("unix:" .. path) end
    if opts and (opts.pool or opts.pool_size or opts.backlog) then
      return sock:connect(target, nport, {
        pool = opts.pool, pool_size = opts.pool_size, backlog = opts.backlog,
      })
    end
    return sock:connect(target, nport)
  end
  local ok, err = attempt()
  -- opts.fresh: a new connection, not one from the pool (after a pooled one
  -- turned out to be stale, its pool mates are suspect too). nginx has no
  -- way to skip the pool, so pooled ones are closed until a new one comes;
  -- a pool holds at most pool_size, the bound only guards against a loop.
  local drained = 0
  while ok and opts and opts.fresh and drained < 1000 and (sock:getreusedtimes() or 0) > 0 do
    sock:close()
    drained = drained + 1
    sock = ngx.socket.tcp()
    self.sock = sock
    if not self:_arm() then
      sock:close()
      return nil, "timeout", "connect to " .. self.peer .. ": deadline exceeded"
    end
    ok, err = attempt()
  end
  if not ok then
    sock:close()
    local code = err == "timeout" and "timeout" or "connect"
    local msg = err == "timeout" and "timed out" or tostring(err)
    return nil, code, "connect to " .. self.peer .. ": " .. msg
  end
  return self
end

M.Cosocket = Cosocket
return M
