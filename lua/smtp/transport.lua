-- Chooses the transport for a connection: OpenResty cosockets inside nginx
-- (where a blocking socket would stall the worker), the blocking C socket
-- everywhere else, or the one the transport option names ("socket",
-- "copas", "cqueues": event loops are never guessed). All speak the same
-- small interface:
--   send(s, i) -> n | nil, code, msg      receive() -> bytes | nil, code, msg
--   starttls(opts) -> true | nil, code, msg
--   settimeouts(timeout, deadline)        close()
-- with codes timeout, closed, connect, tls, io. The cosocket transport also
-- has setkeepalive(timeout, size) and getreusedtimes(). For the send report
-- (smtp.report), optionally: peername() -> "address:port", tls_info() ->
-- version, cipher, resumed, peer_certificate() -> the server's certificate
-- (DER).
local M = {}

-- Inside nginx (lua-nginx-module, stream-lua or the resty CLI): ngx.socket.tcp
-- exists there and nowhere else. A plain Lua with a stub `ngx` table that
-- has no get_phase is not nginx.
local function in_nginx()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.socket) == "table"
    and ngx.socket.tcp ~= nil and ngx.get_phase ~= nil
end

M.in_nginx = in_nginx

-- A port as a number: a number, a numeric string or a mail service's name
-- (what getaddrinfo would take from /etc/services, which nginx and the
-- event loops do not read); nil for anything else.
local SERVICES = { smtp = 25, submission = 587, submissions = 465, smtps = 465, lmtp = 24 }

function M.port_number(port)
  return tonumber(port) or SERVICES[port]
end

-- "host:port", an IPv6 address in brackets: how every transport, the proxy
-- code and the send report write a peer.
function M.host_port(host, port)
  if host:find(":", 1, true) then return "[" .. host .. "]:" .. tostring(port) end
  return host .. ":" .. tostring(port)
end

-- host, port; timeout: seconds per operation; deadline: absolute
-- smtp.core.now() time or nil; opts: { path = unix socket path } and, for
-- cosockets, { pool = name, pool_size = n, backlog = n } for nginx's pool;
-- { kind = "socket" | "copas" | "cqueues" }: that transport, wherever it runs.
local named = {
  copas = "smtp.transport.copas",
  cqueues = "smtp.transport.cqueues",
}

function M.connect(host, port, timeout, deadline, opts)
  local kind = opts and opts.kind
  if named[kind] then
    return require(named[kind]).connect(host, port, timeout, deadline, opts)
  end
  if in_nginx() and kind ~= "socket" then
    return require("smtp.transport.cosocket").connect(host, port, timeout, deadline, opts)
  end
  return require("smtp.transport.socket").connect(host, port, timeout, deadline, opts and opts.path)
end

return M
