-- The send report: what every result and every failure's info carries as
-- `session` (docs/api.md, "The send report"). A session keeps one record
-- (M.new) that the connection steps fill in; M.snapshot turns it into the
-- table a result gets, a new one each time (the TLS and capability tables
-- are shared by the results of one session). Times are seconds on
-- smtp.core.now()'s monotonic clock. Nothing secret ever enters it: the
-- mechanism's name, never the user, password or token.
local core = require "smtp.core"

local M = {}

-- A record for a connection about to be made (t0: when the call started).
function M.new(host, port, path, protocol, t0)
  return {
    host = host, port = not path and tonumber(port) or nil, path = path,
    protocol = protocol == "lmtp" and "lmtp" or "smtp",
    t0 = t0 or core.now(), timings = {},
  }
end

-- "192.0.2.1:25" or "[2001:db8::1]:25" -> the address alone.
local function address_of(peer)
  if type(peer) ~= "string" then return nil end
  return peer:match("^%[(.*)%]:%d+$") or peer:match("^(.*):%d+$") or peer
end

-- The transport is connected (or not: transport is nil). Through a proxy
-- the socket's peer is the proxy: its address goes in `proxy`, and the
-- server's address stays unknown (the proxy may have resolved the name).
function M.connected(rep, transport, via_proxy)
  rep.timings.connect = core.now() - rep.t0
  if rep.path then
    rep.address = rep.path
  elseif transport and transport.peername then
    local peer = address_of(transport:peername())
    if via_proxy then rep.proxy = peer else rep.address = peer end
  end
end

-- The TLS handshake ended well after elapsed seconds; verified: whether
-- the chain and name were checked.
function M.tls(rep, transport, verified, elapsed)
  rep.timings.tls = (rep.timings.tls or 0) + elapsed
  local t = { verified = verified == true }
  if transport.tls_info then
    local version, cipher = transport:tls_info()
    t.version, t.cipher = version, cipher
  end
  local der = transport.peer_certificate and transport:peer_certificate()
  if der and core.tls_cert_info then
    t.peer = core.tls_cert_info(der) or nil
  end
  rep.tls_report = t
end

-- TLS details a pooled connection kept (version, cipher, verified).
function M.tls_from_state(rep, st)
  if st.tls then
    rep.tls_report = { version = st.tls_version, cipher = st.tls_cipher, verified = st.verified == true }
  end
end

function M.auth(rep, elapsed)
  rep.timings.auth = elapsed
end

local function copy_caps(caps)
  local out = {}
  for k, v in pairs(caps or {}) do out[k] = v end
  return out
end

-- The `session` table for a result: s the session (or nil before one
-- existed), transaction: this transaction's seconds (or nil), now: when
-- the result was made (default: now).
function M.snapshot(rep, s, transaction, now)
  local t = rep.timings
  local out = {
    host = rep.host, address = rep.address, proxy = rep.proxy, port = rep.port,
    protocol = rep.protocol,
    timings = { connect = t.connect, tls = t.tls, auth = t.auth, transaction = transaction,
                total = (now or core.now()) - rep.t0 },
    reused = false,
  }
  if s then
    out.tls = rep.tls_report
    out.reused = s.reused == true
    local auth = s.authenticated
    if type(auth) == "string" then out.auth = auth end
    if rep.caps_of ~= s.capabilities then
      rep.caps_of, rep.caps = s.capabilities, copy_caps(s.capabilities)
    end
    out.capabilities = rep.caps
  end
  return out
end

-- Puts the report on a failure's info (when it has none yet) and returns
-- the triple; the session, when there was one by then, is rep.session.
function M.on_failure(rep, ok, err, info)
  if ok == nil and rep and type(info) == "table" and info.session == nil then
    info.session = M.snapshot(rep, rep.session)
  end
  return ok, err, info
end

return M
