-- Every option of the public API, in one table: its name, where it is
-- taken, what it accepts, its default, one line of documentation and
-- whether it is part of a connection's identity (what the nginx pool key
-- is made of). The table drives validation (unknown names and wrong types
-- or values raise at the caller's line, before any connection), the pool
-- key, docs/options.md and the LuaLS annotations (scripts/gen-options.lua).
local M = {}

-- ---- what a value may be ------------------------------------------------------

local function is_string(v) return type(v) == "string" end

-- A string that reaches C as a C string: a NUL would cut it there, so the
-- name checked would not be the name given.
local function c_string(v) return type(v) == "string" and not v:find("\0", 1, true) end

local function nonempty_c_string(v) return c_string(v) and v ~= "" end

local function boolean(v) return type(v) == "boolean" end

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

local function integer(v) return finite(v) and v == math.floor(v) end

-- Seconds to wait: positive and finite (0 or a negative value would mean
-- "forever" to poll and to cosockets).
local function seconds(v) return finite(v) and v > 0 and v <= 1e6 end

local function one_of(...)
  local set = {}
  for _, v in ipairs({ ... }) do set[v] = true end
  return function(v) return set[v] == true end
end

-- A list with a nil in the middle: its positive integer keys do not run
-- 1..n without a gap. (# alone cannot tell: #{ 1, nil, 3 } may be 3.)
local function holes(t)
  local max, count = 0, 0
  for k in pairs(t) do
    if type(k) == "number" and k >= 1 and k == math.floor(k) then
      count = count + 1
      if k > max then max = k end
    end
  end
  return max ~= count
end
M.has_holes = holes

-- Address text itself (CR, LF, NUL ...) is checked as a value: a bad
-- address returns the failure triple naming the field.
local function addresses(v)
  if type(v) == "string" then return true end
  if type(v) ~= "table" then return false end
  if holes(v) then return false, "has a hole (a nil in the list)" end
  return true
end

-- A host name or address: no spaces or control characters (through a
-- proxy the name is written into the request).
local function host_name(v) return nonempty_c_string(v) and not v:find("[%c%s]") end

-- proxy = "socks5://[user:pass@]host:port", socks5h:// or http:// (smtp.proxy).
local function proxy_url(v)
  if type(v) ~= "string" then return false end
  local ok, why = require("smtp.proxy").parse(v)
  if ok then return true end
  return false, why
end

local function port(v)
  if type(v) == "number" then return integer(v) and v >= 1 and v <= 65535 end
  return nonempty_c_string(v)
end

local function debug_level(v)
  return v == false or v == 0 or v == 1 or v == 2 or type(v) == "function"
end

-- The smallest values the engine takes (smtp_engine.c): a reply line of
-- 512 octets is RFC 5321's own minimum; output must hold a BDAT chunk header
-- and a command or two.
local LIMIT_MIN = { max_line = 512, max_lines = 1, max_output = 4096 }

local function limits(v)
  if type(v) ~= "table" then return false end
  for k, n in pairs(v) do
    local min = LIMIT_MIN[k]
    if not min then return false, "has no field " .. tostring(k) end
    if not integer(n) or n < min or n > 2 ^ 31 then
      return false, "." .. k .. " must be a whole number from " .. min .. " to 2^31"
    end
  end
  return true
end

local function window(v) return integer(v) and v >= 1 and v <= 1000 end

-- A time from 1970 to 9999 (what os.date renders with a four-digit year),
-- or a date-time string (its text is checked with the other header values).
local function date(v)
  if type(v) == "number" then return integer(v) and v >= 0 and v < 253402300800 end
  return type(v) == "string"
end

local ATTACHMENT_FIELDS = { path = is_string, filename = is_string, content = is_string,
                            content_type = is_string, content_id = is_string,
                            disposition = is_string }

local function attachments(v)
  if type(v) ~= "table" then return false end
  if holes(v) then return false, "has a hole (a nil in the list)" end
  for i, att in ipairs(v) do
    if type(att) ~= "table" then return false, "[" .. i .. "] must be a table" end
    for k, x in pairs(att) do
      local ok = ATTACHMENT_FIELDS[k]
      if not ok then return false, "[" .. i .. "] has no field " .. tostring(k) end
      if not ok(x) then
        return false, "[" .. i .. "]." .. k .. " must be a string"
      end
    end
  end
  return true
end

local function header_value(x) return type(x) == "string" or type(x) == "number" end

-- { { "X-A", "1" }, { "X-B", "2" } } (kept in order) or { ["X-A"] = "1" }.
local function headers(v)
  if type(v) ~= "table" then return false end
  if #v > 0 then
    if holes(v) then return false, "has a hole (a nil in the list)" end
    for k, pair in pairs(v) do
      if type(k) ~= "number" then return false, "mixes { name, value } pairs with name = value fields" end
      if type(pair) ~= "table" or type(pair[1]) ~= "string" or not header_value(pair[2]) then
        return false, "[" .. k .. "] must be a { name, value } pair of strings"
      end
    end
    return true
  end
  for k, x in pairs(v) do
    if type(k) ~= "string" then return false, "mixes { name, value } pairs with name = value fields" end
    if not header_value(x) then return false, "." .. k .. " must be a string" end
  end
  return true
end

local function envelope(v)
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if k ~= "from" and k ~= "to" then return false, "has no field " .. tostring(k) end
    if k == "from" and not is_string(x) then return false, ".from must be a string" end
    if k == "to" then
      if type(x) == "table" then
        if holes(x) then return false, ".to has a hole (a nil in the list)" end
      elseif not is_string(x) then
        return false, ".to must be a string or a list"
      end
    end
  end
  return true
end

local function message(v)
  if type(v) == "string" or type(v) == "function" or io.type(v) == "file" then return true end
  if type(v) == "table" and v.source then
    -- A message object, or a table with source() and size (octets on the wire).
    if v.size ~= nil and not (integer(v.size) and v.size >= 0 and v.size < 2 ^ 53) then
      return false, ".size must be a whole number of octets"
    end
    return true
  end
  return false
end

local DKIM_FIELDS = {
  domain = is_string, selector = is_string,
  key = function(k) return type(k) == "string" or (type(k) == "table" and c_string(k.path)) end,
  algorithm = is_string, canonicalization = is_string,
  headers = function(h)
    if type(h) ~= "table" or holes(h) then return false end
    for _, n in pairs(h) do if type(n) ~= "string" then return false end end
    return true
  end,
}

-- dkim = { domain =, selector =, key = PEM | { path = } ... }, a list of
-- such tables (signed by each), or false (none, over a session's).
local function dkim(v)
  if v == false then return true end
  if type(v) ~= "table" then return false end
  local list = v[1] ~= nil and v or { v }
  if holes(list) then return false, "has a hole (a nil in the list)" end
  for i, d in ipairs(list) do
    local where = #list > 1 and "[" .. i .. "]" or ""
    if type(d) ~= "table" then return false, where .. " must be a table" end
    for k, x in pairs(d) do
      local ok = DKIM_FIELDS[k]
      if not ok then return false, where .. " has no field " .. tostring(k) end
      if not ok(x) then
        return false, where .. "." .. k .. (k == "key" and " must be a PEM string or { path = }"
          or k == "headers" and " must be a list of header names" or " must be a string")
      end
    end
    for _, req in ipairs({ "domain", "selector", "key" }) do
      if d[req] == nil then return false, where .. " needs " .. req end
    end
  end
  return true
end

local function unsubscribe(v)
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if k ~= "url" and k ~= "mailto" then return false, "has no field " .. tostring(k) end
    if type(x) ~= "string" then return false, "." .. k .. " must be a string" end
  end
  if v.url == nil and v.mailto == nil then return false, "needs url or mailto" end
  return true
end

-- ---- the table -------------------------------------------------------------------
-- where: c = connection (smtp.send, smtp.connect), m = message (smtp.send,
-- s:send, send_many entries), r = at sending only, never smtp.message (raw
-- messages; DKIM, which signs the message as it is sent),
-- b = send_many's options. identity: part of the nginx pool key.

M.list = {
  -- the connection
  { name = "host", luals = 'string',
    where = "c", valid = host_name, want = "a host name or address (no spaces or control characters)",
    default = "localhost",
    identity = true, doc = "server name or address; every address it resolves to is tried in turn" },
  { name = "port", luals = 'integer|string',
    where = "c", valid = port, want = "a port number (1-65535) or a service name",
    default = "25 (465 with tls = \"implicit\")", identity = true,
    doc = "port = 465 with tls = \"auto\" means implicit TLS" },
  { name = "path", luals = 'string',
    where = "c", valid = nonempty_c_string, want = "a socket path", identity = true,
    doc = "a Unix-domain socket instead of host and port (LMTP servers)" },
  { name = "proxy", luals = 'string',
    where = "c", valid = proxy_url, want = "a proxy URL (socks5://, socks5h:// or http://)",
    identity = true, key = function(v) return require("smtp.proxy").key_parts(v) end,
    doc = "socks5://[user:pass@]host:port (the client resolves host), socks5h://... (the proxy" ..
      " resolves it) or http://[user:pass@]host:port (CONNECT); TLS runs end to end through it" },
  { name = "tls", luals = '"auto"|"starttls"|"implicit"|"none"',
    where = "c", valid = one_of("auto", "starttls", "implicit", "none"),
    want = "\"auto\", \"starttls\", \"implicit\" or \"none\"", default = "auto", identity = true,
    doc = "auto: STARTTLS when offered, required with credentials; starttls: required;" ..
      " implicit: TLS from the start; none" },
  { name = "verify", luals = 'boolean',
    where = "c", valid = boolean, want = "true or false", default = "true", identity = true,
    doc = "false turns every certificate check off (the transcript says so)" },
  { name = "servername", luals = 'string',
    where = "c", valid = nonempty_c_string, want = "a host name", default = "host",
    identity = true, doc = "the name for SNI and for the certificate check (an IP address is checked as an IP)" },
  { name = "cafile", luals = 'string',
    where = "c", valid = nonempty_c_string, want = "a file name", default = "the system store",
    identity = true, doc = "CA certificates (PEM) that replace the system trust store" },
  { name = "capath", luals = 'string',
    where = "c", valid = nonempty_c_string, want = "a directory name", identity = true,
    doc = "a hashed directory of CA certificates that replaces the system trust store" },
  { name = "cert", luals = 'string',
    where = "c", valid = nonempty_c_string, want = "a file name", identity = true,
    doc = "a client certificate (PEM file)" },
  { name = "key", luals = 'string',
    where = "c", valid = nonempty_c_string, want = "a file name", identity = true,
    doc = "the client certificate's private key (PEM file)" },
  { name = "user", luals = 'string',
    where = "c", valid = c_string, want = "a string without NUL", identity = true,
    doc = "AUTH user name (UTF-8 allowed)" },
  { name = "password", luals = 'string',
    where = "c", valid = c_string, want = "a string without NUL", identity = true, secret = true,
    doc = "AUTH password (UTF-8 allowed); a user without password or token is an argument failure" },
  { name = "token", luals = 'string|fun(report?: { status?: string, scope?: string }): string',
    where = "c", valid = function(v) return c_string(v) or type(v) == "function" end,
    want = "a string without NUL or a function returning one", identity = true, secret = true,
    doc = "an OAuth 2 access token for OAUTHBEARER or XOAUTH2 with user; a function is called for it," ..
      " and once more with the server's report when the token was refused" },
  { name = "auth", luals = '"SCRAM-SHA-256"|"CRAM-MD5"|"PLAIN"|"LOGIN"|"XOAUTH2"|"OAUTHBEARER"',
    where = "c",
    valid = function(v) return type(v) == "string" and one_of("SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN",
      "XOAUTH2", "OAUTHBEARER")(v:upper()) end,
    want = "\"SCRAM-SHA-256\", \"CRAM-MD5\", \"PLAIN\", \"LOGIN\", \"XOAUTH2\" or \"OAUTHBEARER\"",
    default = "the strongest in common", identity = true, doc = "force one SASL mechanism" },
  { name = "authzid", luals = 'string',
    where = "c", valid = c_string, want = "a string without NUL", identity = true,
    doc = "authorization identity (PLAIN, SCRAM)" },
  { name = "insecure_auth", luals = 'boolean',
    where = "c", valid = boolean, want = "true or false", default = "false", identity = true,
    doc = "true allows AUTH over a plaintext connection" },
  { name = "helo", luals = 'string',
    where = "c", valid = is_string, want = "a host name", default = "this host's name",
    identity = true, doc = "the name sent with EHLO/HELO/LHLO" },
  { name = "protocol", luals = '"smtp"|"lmtp"',
    where = "c", valid = one_of("smtp", "lmtp"), want = "\"smtp\" or \"lmtp\"", default = "smtp",
    identity = true, doc = "lmtp: LHLO, and one reply per recipient after the data" },
  { name = "timeout", luals = 'number',
    where = "c", valid = seconds, want = "a number of seconds above 0", default = "30",
    doc = "seconds for each wait (connect, each reply, each write, TLS handshake)" },
  { name = "deadline", luals = 'number',
    where = "c", valid = seconds, want = "a number of seconds above 0",
    doc = "seconds for the whole call, whatever the server does" },
  { name = "debug", luals = '1|2|false|fun(kind: string, text: string)',
    where = "c", valid = debug_level, want = "1, 2, false or a function(kind, text)",
    doc = "1: transcript on stderr; 2: with time stamps and the engine's state transitions; " ..
      "a function gets each line; in nginx 1/2 go to ngx.log" },
  { name = "pipelining", luals = 'boolean',
    where = "c", valid = boolean, want = "true or false", default = "true", identity = true,
    doc = "use PIPELINING when offered" },
  { name = "chunking", luals = 'boolean',
    where = "cb", valid = boolean, want = "true or false", default = "true",
    doc = "use CHUNKING (BDAT) when offered" },
  { name = "window", luals = 'integer',
    where = "cb", valid = window, want = "a whole number from 1 to 1000",
    doc = "send_many: unset, up to 8 transactions in flight, each body after its envelope replies;" ..
      " n > 1: blind BDAT windows" },
  { name = "limits", luals = '{ max_line?: integer, max_lines?: integer, max_output?: integer }',
    where = "c", valid = limits, want = "a table { max_line =, max_lines =, max_output = }",
    doc = "what one server reply may cost in memory: octets per line, lines, octets in all" },
  { name = "pool_size", luals = 'integer',
    where = "c", valid = function(v) return integer(v) and v >= 1 end,
    want = "a positive whole number", doc = "nginx: connections kept per pool (setkeepalive)" },
  { name = "transport", luals = '"socket"|"copas"|"cqueues"|table|userdata',
    where = "c", valid = function(v)
      return v == "socket" or v == "copas" or v == "cqueues" or type(v) == "table" or type(v) == "userdata"
    end,
    want = "\"socket\", \"copas\", \"cqueues\" or a transport object",
    default = "nginx cosockets in nginx, else \"socket\"",
    doc = "copas: inside a copas thread; cqueues: in a coroutine of a cqueues controller" ..
      " (docs/api.md#event-loops-copas-and-cqueues); socket: the blocking C socket;" ..
      " or an already connected transport (lua/smtp/transport.lua)" },
  -- the message
  { name = "from", luals = 'string|table',
    where = "m", valid = addresses, want = "an address string or a list",
    doc = "the author: \"Name <a@b>\", a list, or { name =, address = }" },
  { name = "sender", luals = 'string|table',
    where = "m", valid = addresses, want = "an address string or a table",
    doc = "the Sender header (RFC 5322 3.6.2), required when from has several mailboxes" },
  { name = "to", luals = 'string|table',
    where = "m", valid = addresses, want = "an address string or a list", doc = "recipients" },
  { name = "cc", luals = 'string|table',
    where = "m", valid = addresses, want = "an address string or a list", doc = "copy recipients" },
  { name = "bcc", luals = 'string|table',
    where = "m", valid = addresses, want = "an address string or a list",
    doc = "blind copy recipients: in the envelope, never in the message" },
  { name = "reply_to", luals = 'string|table',
    where = "m", valid = addresses, want = "an address string or a list",
    doc = "the Reply-To header" },
  { name = "subject", luals = 'string',
    where = "m", valid = is_string, want = "a string", doc = "the subject (UTF-8 allowed)" },
  { name = "text", luals = 'string',
    where = "m", valid = is_string, want = "a string", doc = "the plain text body" },
  { name = "html", luals = 'string',
    where = "m", valid = is_string, want = "a string", doc = "the HTML body" },
  { name = "attachments", luals = 'smtp.Attachment[]',
    where = "m", valid = attachments,
    want = "a list of { path | content, filename, content_type, content_id, disposition }",
    doc = "files or strings to attach" },
  { name = "headers", luals = 'table<string, string|number>|{ [1]: string, [2]: string|number }[]',
    where = "m", valid = headers, want = "a list of { name, value } pairs or a name = value table",
    doc = "further header fields" },
  { name = "date", luals = 'string|integer',
    where = "m", valid = date, want = "a date-time string or a time in seconds since 1970",
    default = "now", doc = "the Date header" },
  { name = "message_id", luals = 'string',
    where = "m", valid = is_string, want = "a string", default = "generated",
    doc = "the Message-ID (\"<left@right>\")" },
  { name = "message_id_domain", luals = 'string',
    where = "m", valid = is_string, want = "a domain", default = "from's domain",
    doc = "the right side of a generated Message-ID" },
  { name = "envelope", luals = '{ from?: string, to?: string|string[] }',
    where = "m", valid = envelope, want = "a table { from =, to = }",
    doc = "the SMTP envelope, instead of the one taken from the headers" },
  { name = "message", luals = 'string|file*|fun(): string?|smtp.Message',
    where = "mr", valid = message, want = "a string, a file, a function or a message object",
    doc = "a whole message instead of composing one" },
  { name = "dkim", luals = 'smtp.Dkim|smtp.Dkim[]|false',
    where = "cmr", valid = dkim, want = "a table { domain =, selector =, key = }, a list of them, or false",
    doc = "DKIM-sign every message (given to smtp.connect) or this one; false: not this one" },
  { name = "unsubscribe", luals = '{ url?: string, mailto?: string }',
    where = "m", valid = unsubscribe, want = "a table { url =, mailto = }",
    doc = "one-click unsubscribe: List-Unsubscribe (both forms) and, with url, List-Unsubscribe-Post" },
  { name = "dsn", luals = 'smtp.Dsn',
    where = "mr", valid = function(v) return type(v) == "table" end,
    want = "a table { ret =, notify =, envid =, orcpt = }", doc = "delivery status notifications (RFC 3461)" },
}

M.by_name = {}
for _, o in ipairs(M.list) do M.by_name[o.name] = o end

-- ---- checking -----------------------------------------------------------------------

-- Edit distance with transpositions (optimal string alignment): "htlm"
-- is one step from "html".
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end

-- The known option closest to name, when it is close enough to be a typo.
local function closest(name, allowed)
  local best, best_d
  for _, o in ipairs(M.list) do
    if allowed(o) then
      local d = distance(name, o.name)
      if not best_d or d < best_d then best, best_d = o.name, d end
    end
  end
  if best_d and best_d <= math.max(2, math.floor(#name / 3)) then return best end
  return nil
end

-- Which options each entry point takes.
local SCOPES = {
  send = function(o) return o.where:find("[cm]") ~= nil end,        -- smtp.send
  connect = function(o) return o.where:find("c", 1, true) ~= nil end, -- smtp.connect
  -- s:send and send_many entries take smtp.send's table whole, so that one
  -- table can serve both; the connection's options are checked and unused.
  message = function(o) return o.where:find("[cm]") ~= nil end,
  compose = function(o) return o.where:find("r", 1, true) == nil and o.where ~= "b" end, -- smtp.message
  batch = function(o) return o.where:find("b", 1, true) ~= nil end,   -- send_many's options
}

-- Raises at the caller's line (level as for error(), counted from the
-- function that calls check) unless every field of opts is an option of
-- this scope with a valid value. what: how the table is named in errors.
-- scope -> { [option name] = option }: what SCOPES allows, worked out once
-- (check runs for every message of a batch).
local allowed_by_scope = {}
local function allowed_options(scope)
  local set = allowed_by_scope[scope]
  if not set then
    set = {}
    for _, o in ipairs(M.list) do
      if SCOPES[scope](o) then set[o.name] = o end
    end
    allowed_by_scope[scope] = set
  end
  return set
end

function M.check(opts, scope, level, what)
  local allowed = SCOPES[scope]
  local allowed_set = allowed_options(scope)
  level = (level or 1) + 1
  if type(opts) ~= "table" then
    error(string.format("smtp: %s must be a table, got %s", what or "options", type(opts)), level)
  end
  for k, v in pairs(opts) do
    local o = allowed_set[k]
    if not o then
      o = type(k) == "string" and M.by_name[k]
      local near = type(k) == "string" and closest(k, allowed)
      local where = what and (" in " .. what) or ""
      local msg = type(k) == "string" and string.format("smtp: unknown option '%s'%s", k, where)
        or string.format("smtp: %s has a field that is not an option name (%s)", what or "options", tostring(k))
      if o then
        msg = string.format("smtp: option '%s' is not taken here%s", k, where)
      elseif near then
        msg = msg .. string.format(" (did you mean '%s'?)", near)
      end
      error(msg, level)
    end
    local ok, why = o.valid(v)
    if not ok then
      local shown = (type(v) == "string" or type(v) == "number") and
        string.format(" %s", string.format("%q", tostring(v)):gsub("\\\n", "\\n"):sub(1, 60)) or ""
      local where = what and (" in " .. what) or ""
      if why then
        error(string.format("smtp: option '%s'%s %s", k, where, why), level)
      end
      error(string.format("smtp: option '%s'%s must be %s, got %s%s", k, where, o.want, type(v), shown), level)
    end
  end
  return opts
end

-- The nginx pool name: every identity option, secrets hashed by hash(s).
function M.pool_key(opts, resolved, hash)
  resolved = resolved or {}
  local parts, secrets = { "lua-smtp" }, {}
  for _, o in ipairs(M.list) do
    if o.identity then
      local v = resolved[o.name]
      if v == nil then v = opts[o.name] end
      if o.key and v ~= nil then
        -- Part in clear, part secret (a proxy URL's credentials).
        local clear, secret = o.key(v)
        parts[#parts + 1] = o.name .. "=" .. clear
        secrets[#secrets + 1] = secret
      elseif o.secret then
        -- A token function stands for the user's tokens (a new closure per
        -- request must not split the pool); the user is in the key.
        secrets[#secrets + 1] = type(v) == "function" and "token function" or tostring(v)
      else
        parts[#parts + 1] = o.name .. "=" .. tostring(v)
      end
    end
  end
  parts[#parts + 1] = hash(table.concat(secrets, "\0"))
  return table.concat(parts, "|")
end

return M
