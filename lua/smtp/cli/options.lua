-- Command line parsing for bin/smtp-send: long options (--name VALUE or
-- --name=VALUE), the sendmail flags (-t, -i, -f addr, -oi, ...), server
-- specifications (host[:port] and smtp://, smtps://, lmtp:// URLs) and
-- --dsn values. Pure functions: nothing here reads files or the network.
-- Every failure is returned as nil, message (a usage error).
local M = {}

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end
M.trim = trim

local TLS_MODES = { auto = true, starttls = true, implicit = true, none = true }
M.TLS_MODES = TLS_MODES

-- Long options: arg = takes a value; list = repeatable (values collected);
-- key = field in the result (default: the name with - turned into _).
local long = {
  server = { arg = true }, port = { arg = true }, tls = { arg = true },
  cafile = { arg = true }, user = { arg = true }, auth = { arg = true },
  ["insecure-auth"] = {},
  ["password-file"] = { arg = true },
  from = { arg = true },
  to = { arg = true, list = true }, cc = { arg = true, list = true },
  bcc = { arg = true, list = true },
  subject = { arg = true }, body = { arg = true },
  ["body-file"] = { arg = true }, ["html-file"] = { arg = true },
  attach = { arg = true, list = true }, header = { arg = true, list = true },
  dsn = { arg = true, list = true },
  helo = { arg = true }, timeout = { arg = true },
  config = { arg = true }, account = { arg = true },
  verbose = {}, json = {}, ["dry-run"] = {}, help = {}, version = {},
  progress = {}, ["no-progress"] = {},
  ["read-recipients"] = { key = "t" },
}

-- Options whose presence means "compose a message from options" rather
-- than "read a whole message from standard input".
M.COMPOSE = { "subject", "body", "body_file", "html_file", "attach", "header" }

-- Sendmail flags that take no value and change nothing here: -i and -oi
-- (a lone dot never ends the input: it is always read to EOF), -U (initial
-- submission), -m (me too), -bm (deliver mail: the only mode there is),
-- and the -o/-e settings listed below.
local ignored_o = {
  i = true,         -- -oi: same as -i
  m = true,         -- -om: me too
  o = true,         -- -oo: old-style headers
  em = true, ep = true, eq = true, ew = true, ee = true,  -- -oeX: error mode
}

local short_flags = { t = "t", i = "i", v = "verbose", U = false, m = false }
local short_args = { f = "f", r = "f", F = "F", N = "N", R = "R", V = "V", C = "config", B = false }

local function set(opts, key, value, list)
  if list then
    local t = opts[key] or {}
    t[#t + 1] = value
    opts[key] = t
  else
    opts[key] = value
  end
end

-- One -o setting (the text after "-o"): nil, message when not known.
local function o_option(rest, opts)
  if rest == "i" then
    opts.i = true
    return true
  end
  if ignored_o[rest] or rest:match("^d[bqiw]?$") or rest:match("^e[mpqwe]$") then
    return true
  end
  return nil, "unsupported sendmail option -o" .. rest
end

-- A cluster of short options such as -ti, -vv, -fsender or -oi.
local function short_cluster(word, argv, i, opts)
  local j = 2
  while j <= #word do
    local c = word:sub(j, j)
    local rest = word:sub(j + 1)
    if c == "o" then
      if rest == "" then return nil, "option -o needs a setting (such as -oi)" end
      local ok, err = o_option(rest, opts)
      if not ok then return nil, err end
      return i
    elseif c == "e" and j == 2 and rest:match("^[mpqwe]$") then
      return i                                     -- -em, -ep, ...: error mode
    elseif c == "b" and j == 2 then
      if rest == "m" then return i end
      return nil, "unsupported sendmail mode -b" .. rest .. " (only -bm, sending, is supported)"
    elseif c == "A" and j == 2 and (rest == "m" or rest == "c") then
      return i                                     -- -Am / -Ac: which config to use
    elseif short_flags[c] ~= nil then
      local key = short_flags[c]
      if key == "verbose" then
        opts.verbose = (opts.verbose or 0) + 1
      elseif key then
        opts[key] = true
      end
      j = j + 1
    elseif short_args[c] ~= nil then
      local value = rest
      if value == "" then
        i = i + 1
        value = argv[i]
        if value == nil then return nil, "option -" .. c .. " needs a value" end
      end
      local key = short_args[c]
      if key then set(opts, key, value) end
      return i
    else
      return nil, "unknown option -" .. c .. (word ~= "-" .. c and " (in " .. word .. ")" or "")
    end
  end
  return i
end

-- Parses argv (an array of strings). Returns a table of options:
-- long option values under their names with - turned into _, lists for the
-- repeatable ones, verbose as a count, the sendmail flags as t, i, f, F, N,
-- R, V, and the positional arguments in opts.args. Or nil, message.
function M.parse(argv)
  local opts = { args = {} }
  local i, n = 1, #argv
  local only_args = false
  while i <= n do
    local word = argv[i]
    if only_args or word == "-" or word:sub(1, 1) ~= "-" then
      opts.args[#opts.args + 1] = word
    elseif word == "--" then
      only_args = true
    elseif word:sub(1, 2) == "--" then
      local name, value = word:match("^%-%-([^=]+)=(.*)$")
      name = name or word:sub(3)
      if name == "password" then
        return nil, "--password is not accepted: a password on the command line is visible to other"
          .. " users; use --password-file FILE, the SMTP_PASSWORD environment variable or the config file"
      end
      local spec = long[name]
      if not spec then return nil, "unknown option --" .. name end
      local key = spec.key or name:gsub("%-", "_")
      if spec.arg then
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then return nil, "option --" .. name .. " needs a value" end
        end
        set(opts, key, value, spec.list)
      else
        if value ~= nil then return nil, "option --" .. name .. " takes no value" end
        if key == "verbose" then
          opts.verbose = (opts.verbose or 0) + 1
        else
          opts[key] = true
        end
      end
    else
      local nexti, err = short_cluster(word, argv, i, opts)
      if not nexti then return nil, err end
      i = nexti
    end
    i = i + 1
  end
  return M.check(opts)
end

-- Value checks that need no I/O.
function M.check(opts)
  if opts.port ~= nil then
    local p = tonumber(opts.port)
    if not p or p ~= math.floor(p) or p < 1 or p > 65535 or not opts.port:match("^%d+$") then
      return nil, "invalid port " .. string.format("%q", opts.port)
    end
    opts.port = p
  end
  if opts.timeout ~= nil then
    local t = tonumber(opts.timeout)
    if not t or t <= 0 then return nil, "invalid timeout " .. string.format("%q", opts.timeout) end
    opts.timeout = t
  end
  if opts.tls ~= nil and not TLS_MODES[opts.tls] then
    return nil, "invalid --tls " .. string.format("%q", opts.tls) .. " (auto, starttls, implicit or none)"
  end
  if opts.server ~= nil then
    local s, err = M.parse_server(opts.server)
    if not s then return nil, "--server: " .. err end
    opts.server = s
  end
  if opts.body ~= nil and opts.body_file ~= nil then
    return nil, "give --body or --body-file, not both"
  end
  if opts.body_file == "-" and opts.html_file == "-" then
    return nil, "--body-file and --html-file cannot both read standard input"
  end
  if opts.progress and opts.no_progress then
    return nil, "give --progress or --no-progress, not both"
  end
  -- --dsn (repeatable) and the sendmail spellings -N, -R, -V.
  local dsn
  for _, v in ipairs(opts.dsn or {}) do
    local err
    dsn, err = M.parse_dsn(v, dsn)
    if not dsn then return nil, "--dsn: " .. err end
  end
  if opts.N or opts.R or opts.V then
    dsn = dsn or {}
    local err
    if opts.N then
      if opts.N:lower() == "never" then
        dsn.notify = { "never" }
      else
        dsn, err = M.parse_dsn("notify=" .. opts.N:gsub(",", "+"), dsn)
        if not dsn then return nil, "-N: " .. err end
      end
    end
    if opts.R then
      dsn, err = M.parse_dsn("ret=" .. opts.R, dsn)
      if not dsn then return nil, "-R: " .. err end
    end
    if opts.V then
      dsn, err = M.parse_dsn("envid=" .. opts.V, dsn)
      if not dsn then return nil, "-V: " .. err end
    end
  end
  opts.dsn = dsn
  for _, h in ipairs(opts.header or {}) do
    if not M.split_header(h) then
      return nil, "invalid --header " .. string.format("%q", h) .. " (expected 'Name: value')"
    end
  end
  opts.verbose = opts.verbose or 0
  return opts
end

-- "Name: value" -> name, value (nil when malformed).
function M.split_header(s)
  local name, value = s:match("^([^:]+):(.*)$")
  if not name then return nil end
  name = trim(name)
  if name == "" or not name:match("^[!-9;-~]+$") then return nil end
  return name, trim(value)
end

local NOTIFY = { never = true, success = true, failure = true, delay = true }

-- Parses "ret=hdrs,notify=failure+delay,envid=X,orcpt" into (or onto) a
-- table { ret =, notify = { ... }, envid =, orcpt = true }.
function M.parse_dsn(s, dsn)
  dsn = dsn or {}
  for item in (s .. ","):gmatch("([^,]*),") do
    item = trim(item)
    if item ~= "" then
      local key, value = item:match("^([%w_]+)%s*=%s*(.*)$")
      key = (key or item):lower()
      if key == "ret" then
        value = value and value:lower()
        if value ~= "hdrs" and value ~= "full" then
          return nil, "ret must be hdrs or full"
        end
        dsn.ret = value
      elseif key == "notify" then
        if not value or value == "" then return nil, "notify needs a value (never or success+failure+delay)" end
        local list, seen = {}, {}
        for word in value:gmatch("[^+|]+") do
          word = trim(word):lower()
          if not NOTIFY[word] then
            return nil, "unknown notify value " .. string.format("%q", word) ..
              " (never, success, failure, delay)"
          end
          if not seen[word] then
            seen[word] = true
            list[#list + 1] = word
          end
        end
        if seen.never and #list > 1 then return nil, "notify=never cannot be combined with other values" end
        dsn.notify = list
      elseif key == "envid" then
        if not value or not value:match("^[!-~]+$") or #value > 100 then
          return nil, "envid must be 1 to 100 printable ASCII characters without spaces"
        end
        dsn.envid = value
      elseif key == "orcpt" then
        local v = value and value:lower()
        if v == nil or v == "yes" or v == "true" or v == "on" then
          dsn.orcpt = true
        elseif v == "no" or v == "false" or v == "off" then
          dsn.orcpt = nil
        else
          return nil, "orcpt takes no value (or yes/no)"
        end
      else
        return nil, "unknown DSN field " .. string.format("%q", key) .. " (ret, notify, envid, orcpt)"
      end
    end
  end
  return dsn
end

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local SCHEMES = {
  smtp = { port = 25 },
  smtps = { port = 465, tls = "implicit" },
  lmtp = { port = 24, protocol = "lmtp" },
}

-- "host", "host:port", "[v6]:port", "smtp://host[:port]", "smtps://...",
-- "lmtp://...", with an optional user@ in URLs. Returns { host =, port =,
-- tls =, protocol =, user = } (port, tls, protocol, user only when the
-- text says so; a URL always sets the port, from its scheme by default),
-- or nil, message.
function M.parse_server(s)
  if type(s) ~= "string" or s == "" then return nil, "empty server" end
  local r = {}
  local scheme, rest = s:match("^(%a[%w+.%-]*)://(.*)$")
  if scheme then
    local def = SCHEMES[scheme:lower()]
    if not def then
      return nil, "unknown scheme " .. string.format("%q", scheme) .. " (smtp, smtps or lmtp)"
    end
    r.tls, r.protocol = def.tls, def.protocol
    rest = rest:gsub("/$", "")
    if rest:find("[/?#]") then return nil, "a server URL takes no path or query" end
    local userinfo, hostport = rest:match("^(.*)@([^@]*)$")
    if userinfo then
      if userinfo:find(":") then
        return nil, "no password in the server URL, please: use --password-file, SMTP_PASSWORD" ..
          " or the config file"
      end
      if userinfo == "" then return nil, "empty user name in the server URL" end
      r.user = percent_decode(userinfo)
      rest = hostport
    end
    s = rest
    r.port = def.port
  end
  local host, port
  if s:sub(1, 1) == "[" then
    host, port = s:match("^%[([%x:.]+)%]:?(%d*)$")
    if not host then return nil, "invalid server " .. string.format("%q", s) end
  elseif select(2, s:gsub(":", "")) > 1 then
    host, port = s, ""                                 -- a bare IPv6 address
  else
    host, port = s:match("^([^:]*):?(%d*)$")
    if not host or (s:find(":") and port == "") then
      return nil, "invalid server " .. string.format("%q", s)
    end
  end
  if host == "" or not host:match("^[%w._:%-]+$") then
    return nil, "invalid host name " .. string.format("%q", host or s)
  end
  r.host = host
  if port ~= "" then
    local p = tonumber(port)
    if p < 1 or p > 65535 then return nil, "invalid port " .. port end
    r.port = p
  end
  return r
end

return M
