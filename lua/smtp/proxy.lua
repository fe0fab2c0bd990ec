-- Proxies: SOCKS5 (RFC 1928, with the username/password method of RFC 1929)
-- and HTTP CONNECT (RFC 9110 9.3.6). The handshake is written once, over
-- the transport interface (send, receive, settimeouts, close: see
-- smtp.transport), so the blocking C socket and the nginx cosocket share
-- it: the transport connects to the proxy, the handshake asks the proxy for
-- a tunnel to the mail server, and the session (greeting, STARTTLS or
-- implicit TLS, with the mail server's name checked) then runs through the
-- tunnel as over a direct connection.
--
--   socks5://[user:pass@]host:port   the client resolves the mail host and
--                                     sends an address
--   socks5h://[user:pass@]host:port  the proxy resolves the name
--   http://[user:pass@]host:port     CONNECT host:port, Proxy-Authorization:
--                                     Basic when credentials are given
-- user and pass are percent-decoded (a "@" in a password is "%40").
local errors = require "smtp.errors"
local transport = require "smtp.transport"
local host_port, port_number = transport.host_port, transport.port_number

local M = {}

-- The most an HTTP proxy's reply to CONNECT may take, headers included.
M.MAX_HTTP_REPLY = 8192
-- How many of the mail host's addresses socks5:// tries, each through a
-- new connection to the proxy.
M.MAX_ADDRESSES = 8

local SCHEMES = { socks5 = true, socks5h = true, http = true }

-- ---- the URL --------------------------------------------------------------------

-- Percent-decoding (RFC 3986 2.1): nil for a "%" without two hex digits.
local function unescape(s)
  if s:find("%%[^%x]") or s:find("%%%x[^%x]") or s:find("%%%x?$") then return nil end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The proxy URL as a table { scheme, host, port, user, password }, or nil
-- and why not (a phrase completing "option 'proxy' ...").
function M.parse(url)
  if type(url) ~= "string" then return nil end
  if url:find("[%c%s]") then
    return nil, "must not contain spaces or control characters (CR, LF, NUL ...)"
  end
  local scheme, rest = url:match("^(%w+)://(.*)$")
  scheme = scheme and scheme:lower()
  if not SCHEMES[scheme] then
    return nil, "must be socks5://[user:pass@]host:port, socks5h://... or http://..., got " ..
      errors.quote(url:gsub("^([^/]*//).*@", "%1<credentials>@"):sub(1, 60))
  end
  rest = rest:gsub("/$", "")
  local userinfo, hostport = rest:match("^(.*)@([^@]*)$")
  if not userinfo then hostport = rest end
  local host, port = hostport:match("^%[([%x:%.]+)%]:(%d+)$")
  local v6 = host ~= nil
  if not host then host, port = hostport:match("^([%w%.%-_]+):(%d+)$") end
  if not host then return nil, "needs host:port after " .. scheme .. "://" end
  port = tonumber(port)
  if port < 1 or port > 65535 then return nil, "has a port out of range (1-65535)" end
  local p = { scheme = scheme, host = host, port = port, v6 = v6 }
  if userinfo then
    local u, pw = userinfo:match("^([^:]*):(.*)$")
    if not u or u == "" or pw == "" then
      return nil, "needs user:password before the @ (both non-empty)"
    end
    u, pw = unescape(u), unescape(pw)
    if not u or not pw then return nil, "has a % not followed by two hex digits in user:password" end
    local bad = "[\r\n]"
    if u:find(bad) or pw:find(bad) or u:find("\0", 1, true) or pw:find("\0", 1, true) then
      return nil, "must not carry CR, LF or NUL in user or password"
    end
    if #u > 255 or #pw > 255 then return nil, "has a user or password longer than 255 octets" end
    if scheme == "http" and u:find(":", 1, true) then
      return nil, "has a ':' in the user name, which HTTP Basic cannot carry"
    end
    p.user, p.password = u, pw
  end
  return p
end


-- "socks5 127.0.0.1:1080", credentials never shown.
function M.describe(p)
  return p.scheme .. " " .. host_port(p.host, p.port) ..
    (p.user and " (user and password <redacted>)" or "")
end

-- For the nginx pool key: the URL without credentials, and the credentials
-- (to be hashed with the other secrets).
function M.key_parts(url)
  local p = M.parse(url)
  if not p then return tostring(url), "" end
  return p.scheme .. "://" .. host_port(p.host, p.port), p.user and (p.user .. "\0" .. p.password) or ""
end

-- ---- reading a reply --------------------------------------------------------------

-- Reads from the transport until buf holds at least n octets: the buffer,
-- or nil, code, msg (the transport's failure).
local function fill(tr, buf, n)
  while #buf < n do
    local data, code, msg = tr:receive()
    if not data then return nil, code, msg end
    buf = buf .. data
  end
  return buf
end

local function send_all(tr, s)
  local i = 1
  while i <= #s do
    local n, code, msg = tr:send(s, i)
    if not n then return nil, code, msg end
    i = i + n
  end
  return true
end

-- ---- SOCKS5 -------------------------------------------------------------------------

-- RFC 1928 6: the reply field.
M.socks_replies = {
  [1] = "general SOCKS server failure",
  [2] = "connection not allowed by ruleset",
  [3] = "network unreachable",
  [4] = "host unreachable",
  [5] = "connection refused",
  [6] = "TTL expired",
  [7] = "command not supported",
  [8] = "address type not supported",
}

-- Failures where another address of the mail host may fare better.
local per_address = { [3] = true, [4] = true, [5] = true, [6] = true }

-- A failure of the handshake: kind, text, extra info.
local function failed(kind, text, extra)
  return nil, kind, text, extra or {}
end

local function lost(what, code, msg)
  if code == "timeout" then return failed("timeout", "timed out waiting for " .. what) end
  return failed("connect", "the connection was lost waiting for " .. what .. " (" ..
    tostring(msg or code) .. ")")
end

local function printable(s, max)
  s = s:sub(1, max or 200):gsub("[%c\128-\255]", function(c) return string.format("\\x%02x", c:byte()) end)
  return s
end

-- dest: { host =, port =, addr = packed address or nil (send the name) }.
-- true, leftover | nil, kind, text, extra.
local function socks5(tr, p, dest)
  local hello = p.user and "\5\2\0\2" or "\5\1\0"
  local ok, code, msg = send_all(tr, hello)
  if not ok then return lost("the SOCKS5 method selection", code, msg) end
  local buf
  buf, code, msg = fill(tr, "", 2)
  if not buf then return lost("the SOCKS5 method selection", code, msg) end
  local ver, method = buf:byte(1, 2)
  if ver ~= 5 then
    return failed("connect", "not a SOCKS5 proxy (its reply starts with " .. printable(buf, 16) .. ")",
      { temporary = false })
  end
  buf = buf:sub(3)
  if method == 0xFF then
    return failed("connect", "the proxy accepts none of the authentication methods offered (" ..
      (p.user and "none, username/password" or "none: give user:password in the URL") .. ")",
      { temporary = false })
  elseif method == 2 and p.user then
    ok, code, msg = send_all(tr, "\1" .. string.char(#p.user) .. p.user .. string.char(#p.password) ..
      p.password)
    if not ok then return lost("the SOCKS5 authentication", code, msg) end
    buf, code, msg = fill(tr, buf, 2)
    if not buf then return lost("the SOCKS5 authentication", code, msg) end
    local status = buf:byte(2)
    if status ~= 0 then
      return failed("connect", "authentication failed: the proxy refused the user name or password" ..
        " (RFC 1929 status " .. status .. ")", { temporary = false, proxy_status = status })
    end
    buf = buf:sub(3)
  elseif method ~= 0 then
    return failed("connect", "the proxy chose an authentication method that was not offered (" ..
      method .. ")", { temporary = false })
  end
  local addr
  if dest.addr then
    addr = (#dest.addr == 4 and "\1" or "\4") .. dest.addr
  else
    if #dest.host > 255 then
      return failed("argument", "the host name is longer than SOCKS5 can carry (255 octets)")
    end
    addr = "\3" .. string.char(#dest.host) .. dest.host
  end
  local req = "\5\1\0" .. addr .. string.char(math.floor(dest.port / 256), dest.port % 256)
  ok, code, msg = send_all(tr, req)
  if not ok then return lost("the SOCKS5 reply to CONNECT", code, msg) end
  buf, code, msg = fill(tr, buf, 5)
  if not buf then return lost("the SOCKS5 reply to CONNECT", code, msg) end
  local rver, rep, _, atyp, alen = buf:byte(1, 5)
  if rver ~= 5 then
    return failed("connect", "an invalid SOCKS5 reply to CONNECT (" .. printable(buf, 16) .. ")",
      { temporary = false })
  end
  if rep ~= 0 then
    local why = M.socks_replies[rep] or "unknown failure"
    return failed("connect", why .. " (SOCKS5 reply " .. rep .. ")",
      { proxy_status = rep, temporary = per_address[rep] or rep == 1, retry = per_address[rep] })
  end
  local size
  if atyp == 1 then size = 4 + 4 + 2
  elseif atyp == 4 then size = 4 + 16 + 2
  elseif atyp == 3 then size = 5 + alen + 2
  else
    return failed("connect", "an invalid SOCKS5 reply to CONNECT (address type " .. atyp .. ")",
      { temporary = false })
  end
  buf, code, msg = fill(tr, buf, size)
  if not buf then return lost("the SOCKS5 reply to CONNECT", code, msg) end
  return true, buf:sub(size + 1)
end

-- ---- HTTP CONNECT ---------------------------------------------------------------------

local function http_connect(tr, p, dest)
  local target = host_port(dest.host, dest.port)
  local req = "CONNECT " .. target .. " HTTP/1.1\r\nHost: " .. target .. "\r\n"
  if p.user then
    req = req .. "Proxy-Authorization: Basic " ..
      require("smtp.core").b64encode(p.user .. ":" .. p.password, 0) .. "\r\n"
  end
  local ok, code, msg = send_all(tr, req .. "\r\n")
  if not ok then return lost("the HTTP proxy's reply to CONNECT", code, msg) end
  local buf, from = "", 1
  local head_end, body_start
  while true do
    local data
    data, code, msg = tr:receive()
    if not data then return lost("the HTTP proxy's reply to CONNECT", code, msg) end
    buf = buf .. data
    local s, e = buf:find("\r?\n\r?\n", from)
    if s then
      head_end, body_start = s - 1, e + 1
      break
    end
    if #buf > M.MAX_HTTP_REPLY then
      return failed("connect", "the HTTP proxy's reply to CONNECT is longer than " .. M.MAX_HTTP_REPLY ..
        " octets without the end of its headers", { temporary = false })
    end
    from = math.max(1, #buf - 3)
  end
  if head_end > M.MAX_HTTP_REPLY then
    return failed("connect", "the HTTP proxy's reply headers are longer than " .. M.MAX_HTTP_REPLY ..
      " octets", { temporary = false })
  end
  local line = buf:match("^[^\r\n]*")
  local status = tonumber(line:match("^HTTP/%d%.%d (%d%d%d)"))
  if not status then
    return failed("connect", "not an HTTP reply to CONNECT: " .. errors.quote(printable(line, 80)),
      { temporary = false })
  end
  if status < 200 or status > 299 then
    local text = "refused CONNECT: " .. printable(line)
    if status == 407 or status == 401 then   -- tinyproxy 1.11 answers 401
      text = text .. (p.user and " (authentication failed: the proxy refused the user name or password)"
        or " (the proxy wants user:password in the URL)")
    end
    return failed("connect", text, { proxy_status = status,
      temporary = status >= 500 or status == 408 or status == 429 })
  end
  return true, buf:sub(body_start)
end

-- ---- connecting through the proxy ------------------------------------------------------

local function ip_literal(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

local function show_addr(a)
  if #a == 4 then return string.format("%d.%d.%d.%d", a:byte(1, 4)) end
  local parts = {}
  for i = 1, 16, 2 do parts[#parts + 1] = string.format("%x", a:byte(i) * 256 + a:byte(i + 1)) end
  return table.concat(parts, ":")
end

-- The handshake on a transport connected to the proxy, bounded as a whole
-- by timeout (and the deadline): true, leftover (what the mail server sent
-- right behind the proxy's reply: its greeting may come in the same read)
-- | nil, kind, text, extra.
function M.handshake(tr, p, dest, timeout, deadline)
  local now = require("smtp.core").now
  local limit = deadline
  if timeout and (not limit or now() + timeout < limit) then limit = now() + timeout end
  tr:settimeouts(timeout, limit)
  local ok, a, b, c
  if p.scheme == "http" then
    ok, a, b, c = http_connect(tr, p, dest)
  else
    ok, a, b, c = socks5(tr, p, dest)
  end
  tr:settimeouts(timeout, deadline)
  return ok, a, b, c
end

-- Connects to the mail server host:port through the proxy p (M.parse's
-- table). connect(host, port): the transport's own connect, to the proxy.
-- numeric: socks5:// may not resolve host names here (nginx), except
-- "localhost". trace: the transcript printer or nil. Returns the transport
-- and the octets read past the proxy's reply, or the failure triple (kind
-- connect, or timeout, with info.stage = "connect" and info.proxy = the
-- scheme).
function M.connect(p, host, port, timeout, deadline, connect, trace, numeric)
  local short = p.scheme .. " " .. host_port(p.host, p.port)
  -- to: the tunnel's end, when the proxy was asked for one.
  local function fail(kind, text, extra, to)
    local info = { stage = "connect", proxy = p.scheme }
    for k, v in pairs(extra or {}) do
      if k ~= "retry" then info[k] = v end
    end
    return errors.fail(kind, "proxy " .. short .. (to and (", tunnel to " .. to) or "") .. ": " .. text, info)
  end
  if trace then trace("proxy", "via " .. M.describe(p)) end
  local nport = port_number(port)
  if not nport or nport < 1 or nport > 65535 or nport ~= math.floor(nport) then
    return fail("argument", "the port of the mail server must be a number through a proxy, got " ..
      errors.quote(port))
  end
  if host:find("[%c%s]") then
    return fail("argument", "the host name contains spaces or control characters")
  end
  -- What to ask the proxy for: the name (socks5h, http), or each address.
  local dests = {}
  if p.scheme == "socks5" then
    local core = require "smtp.core"
    local name = host
    if numeric and name == "localhost" then name = "127.0.0.1" end
    if numeric and not ip_literal(name) then
      return fail("argument", "socks5:// needs the mail host resolved here, which nginx cannot do" ..
        " without blocking: give an IP address, or use socks5h:// (the proxy resolves " .. host .. ")")
    end
    local addrs, _, rmsg = core.resolve(name, numeric or ip_literal(name))
    if not addrs then return fail("connect", rmsg, { temporary = true }) end
    for i = 1, math.min(#addrs, M.MAX_ADDRESSES) do
      dests[i] = { host = host, port = nport, addr = addrs[i] }
    end
  else
    dests[1] = { host = host, port = nport }
  end
  local last
  for i, dest in ipairs(dests) do
    local tr, code, msg = connect(p.host, p.port)
    if not tr then
      return fail(code == "timeout" and "timeout" or "connect", tostring(msg or code), { temporary = true })
    end
    if tr.getreusedtimes and tr:getreusedtimes() > 0 then
      -- A pooled tunnel (nginx): the pool key holds the proxy and the mail
      -- server, so the handshake is done already.
      if trace then trace("proxy", "a pooled tunnel") end
      return tr, ""
    end
    local to = dest.addr and host_port(show_addr(dest.addr), nport) or host_port(host, nport)
    local ok, a, b, c = M.handshake(tr, p, dest, timeout, deadline)
    if ok then
      if trace then
        local named = not dest.addr and not ip_literal(host)
        trace("proxy", "tunnel to " .. to .. " open" .. (named and " (the proxy resolves the name)" or ""))
      end
      return tr, a
    end
    tr:close()
    last = { a, b, c, to }
    if trace then trace("proxy", "tunnel to " .. to .. " failed: " .. b) end
    if not (c and c.retry) or i == #dests then break end
  end
  return fail(last[1], last[2], last[3], last[4])
end

return M
