-- smtp-send: the command line front end of lua-smtp (bin/smtp-send).
--   require("smtp.cli.main").main(arg) -> exit status
local options = require "smtp.cli.options"
local config = require "smtp.cli.config"
local progress = require "smtp.cli.progress"
local rawmsg = require "smtp.cli.rawmsg"
local json = require "smtp.cli.json"

local M = {}

-- Every exit status smtp-send has, with its name: sysexits.h, and 130 for
-- an interrupt (128 + SIGINT, as a shell reports it). This is the one
-- table of them: the code uses EX.<name without EX_> (bin/smtp-send alone
-- writes 70 itself, having failed to load this), and the statuses are
-- documented in one place, man/smtp-send.1 (EXIT STATUS), under these
-- names; spec/manpage_spec.lua checks that both say the same.
M.EXIT_STATUS = {
  { 0, "EX_OK" }, { 64, "EX_USAGE" }, { 65, "EX_DATAERR" }, { 66, "EX_NOINPUT" },
  { 67, "EX_NOUSER" }, { 69, "EX_UNAVAILABLE" }, { 70, "EX_SOFTWARE" },
  { 75, "EX_TEMPFAIL" }, { 76, "EX_PROTOCOL" }, { 77, "EX_NOPERM" }, { 78, "EX_CONFIG" },
  { 130, "SIGINT" },
}
local EX = {}
for _, status in ipairs(M.EXIT_STATUS) do EX[(status[2]:gsub("^EX_", ""))] = status[1] end
M.EX = EX

-- Messages at least this large get a progress bar on a terminal.
M.PROGRESS_MIN = 256 * 1024

M.USAGE = [[
usage: smtp-send [options] --subject TEXT ... [recipient ...]   compose
       smtp-send [options] [-t] [recipient ...] < message       sendmail mode

Compose mode (any of --subject, --body, --body-file, --html-file, --attach,
--header): the message is built from the options; the recipients are
--to/--cc/--bcc plus the arguments (as To). Otherwise the whole message
(RFC 5322: headers, empty line, body) is read from standard input.

Server:
  --server HOST[:PORT]   or a URL: smtp://[user@]host[:port] (port 25),
                         smtps://... (implicit TLS, port 465),
                         lmtp://... (port 24); default localhost:25
  --port N               port (default 25; 465 with --tls implicit, and
                         --tls auto on port 465 means implicit)
  --tls MODE             auto (default), starttls, implicit or none
  --cafile FILE          CA certificates (PEM) to verify the server with
  --user NAME            authenticate as NAME; the password comes from
  --password-file FILE   the first line of FILE, else $SMTP_PASSWORD, else the
                         account's password/passwordeval, else a prompt on the
                         terminal. Never from an argument.
  --auth MECH            SASL mechanism (PLAIN, LOGIN, ...; default: the best
                         one the server offers)
  --insecure-auth        allow AUTH without TLS (a trusted local relay only)
  --helo NAME            name to send with EHLO (default: this host's name)
  --timeout SECONDS      for each network wait (default 30)
  --config FILE          accounts file (default:
                         $XDG_CONFIG_HOME/lua-smtp/config, else
                         ~/.config/lua-smtp/config)
  --account NAME         use this account of the config file

Message (compose mode):
  --from ADDR            sender (From; default: the account's from)
  --to ADDR, --cc ADDR, --bcc ADDR
                         recipients; repeatable, each may hold a comma list
  --subject TEXT         subject
  --body TEXT            text body; or --body-file FILE (- = standard input)
  --html-file FILE       HTML body (with --body: multipart/alternative)
  --attach FILE          attach a file (repeatable)
  --header 'Name: value' add a header field (repeatable)

Delivery:
  --dsn LIST             delivery status notifications, e.g.
                         ret=hdrs,notify=failure+delay,envid=ID,orcpt
  -v, --verbose          SMTP transcript on stderr, then the send report
                         (server, TLS, certificate, timings); -vv with time
                         stamps
  --json                 the result (or the failure) with its send report
                         as one line of JSON on stdout
  --dry-run              print the message on stdout and the envelope on
                         stderr; connect to nothing
  --progress, --no-progress
                         force the progress bar on or off (default: on for
                         large messages when stderr is a terminal); it never
                         changes what is sent
  --help, --version

Sendmail compatibility (for cron, git send-email, PHP's sendmail_path, ...):
  -t                     recipients from the To, Cc and Bcc headers (the
                         Resent-* ones for a resent message), added to the
                         arguments; Bcc and Resent-Bcc headers are removed
                         (always, with or without -t; also as "Bcc : ...")
  -f ADDR, -r ADDR       envelope sender (also --from here; default: the From
                         header, then the account's from, then your login
                         name at this host's name). A name without a domain
                         (cron's -f root) gives way to the account's from,
                         else gets this host's name
  --to, --cc, --bcc      more recipients (envelope only)
  -F NAME                full name for the From header added when missing
  -N LIST, -R RET, -V ID DSN notify (never or success,failure,delay), ret
                         (hdrs, full), envelope id
  -C FILE                same as --config
  Accepted and ignored:  -i, -oi (input is always read to its end), -U, -m,
                         -bm, -Am, -Ac, -B TYPE, -odX, -oeX, -eX, -om, -oo
  Other sendmail modes (-bp, -bs, -q, ...) are refused.
  A message without From, Date or Message-ID gets one (From: the envelope
  sender).

Environment:
  SMTP_SERVER            server (as --server) when no account is in use
  SMTP_PASSWORD          password (see --password-file)

Exit status: 0 when the message was sent; otherwise a sysexits.h code,
listed in the manual: man smtp-send (EXIT STATUS); from a checkout,
man -l man/smtp-send.1.

Text from the server is printed with control characters escaped (\x1b).
]]

-- The version of lua-smtp (the rock's: smtp._VERSION is "lua-smtp X.Y.Z").
function M.version()
  return (require("smtp")._VERSION:gsub("^lua%-smtp%s+", ""))
end

local function execute(cmd)
  local a, _, c = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true and (c == nil or c == 0)
end

local SHORT = { [9] = "\\t", [10] = "\\n", [13] = "\\r" }

-- The UTF-8 sequence starting at byte i of s when it is one (and not a C1
-- control, U+0080 to U+009F), as its length; else nil.
local function utf8_length(s, i)
  local b, b2 = s:byte(i, i + 1)
  if b == 0xC2 and b2 and b2 < 0xA0 then return nil end
  return json.utf8_len(s, i)
end

-- Text made safe for a terminal: control characters (C0, DEL, and C1 raw
-- or UTF-8 encoded) and octets that are not UTF-8 are shown as \xNN (\t,
-- \n, \r), so that text from the server (a reply, a certificate name) can
-- neither drive the terminal with escape sequences nor forge lines.
-- keep_lines keeps line ends and tabs (a traceback).
function M.printable(s, keep_lines)
  s = tostring(s)
  if not s:find("[%c\128-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local b = s:byte(i)
    local len
    if b >= 32 and b < 127 then
      len = 1
    elseif b >= 128 then
      len = utf8_length(s, i)
    elseif keep_lines and (b == 9 or b == 10) then
      len = 1
    end
    if len then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = SHORT[b] or string.format("\\x%02x", b)
      i = i + 1
    end
  end
  return table.concat(out)
end
local printable = M.printable

-- Raises an exit: caught by M.main, which prints the message and returns code.
local function die(code, msg)
  error({ exit = code, message = msg }, 0)
end

local function read_file(path, what)
  if path == "-" then
    local s = io.stdin:read("*a")
    if not s then die(EX.NOINPUT, "cannot read " .. what .. " from standard input") end
    return s
  end
  local f, err = io.open(path, "rb")
  if not f then die(EX.NOINPUT, "cannot read " .. what .. ": " .. tostring(err)) end
  local s = f:read("*a")
  f:close()
  if not s then die(EX.NOINPUT, "cannot read " .. what .. ": " .. path) end
  return s
end

-- The exit status for a failure triple's info.
function M.exit_code(info)
  info = info or {}
  local kind = info.kind
  if kind == "argument" or kind == "size" or info.enhanced == "5.3.4" then return EX.DATAERR end
  if info.temporary then return EX.TEMPFAIL end
  if kind == "recipients" then return EX.NOUSER end
  if kind == "auth" then return EX.NOPERM end
  if kind == "protocol" then return EX.PROTOCOL end
  return EX.UNAVAILABLE
end

-- Asks for a password on the terminal without echo. nil when there is no
-- terminal or nothing was typed.
local function prompt_password(prompt)
  local tty = io.open("/dev/tty", "r")
  if not tty then return nil end
  tty:close()
  local script = 'exec </dev/tty >/dev/tty 2>/dev/tty; s=$(stty -g) || exit 1; ' ..
    'trap \'stty "$s"\' EXIT; trap \'stty "$s"; exit 130\' INT TERM HUP; ' ..
    'stty -echo; printf "%s" "$1"; IFS= read -r p; rc=$?; printf "\\n"; ' ..
    'printf "%s\\n" "$p" >&3; exit $rc'
  local p = io.popen("sh -c " .. config.shell_quote(script) .. " sh " .. config.shell_quote(prompt) .. " 3>&1")
  if not p then return nil end
  local line = p:read("*l")
  p:close()
  if not line or line == "" then return nil end
  return line
end

local function first_line_of(path)
  local text = read_file(path, "password file " .. path)
  if path ~= "-" then
    local ok, terr = config.trusted(path, "password file")
    if not ok then die(EX.CONFIG, terr) end
  end
  local line = text:match("^([^\n]*)")
  return (line:gsub("\r$", ""))
end

-- The password for user: --password-file, $SMTP_PASSWORD, the account's
-- password or passwordeval, or a prompt.
local function resolve_password(opts, acct, getenv, user, host)
  if opts.password_file then return first_line_of(opts.password_file) end
  local env = getenv("SMTP_PASSWORD")
  if env and env ~= "" then return env end
  if acct.password then return acct.password end
  if acct.passwordeval then
    -- The program it runs, when named by a path, must be as trustworthy
    -- as the config file: nobody else may be able to change what runs.
    local program = config.command_path(acct.passwordeval, getenv)
    if program then
      local ok, terr = config.trusted(program, "passwordeval program")
      if not ok then die(EX.CONFIG, terr) end
    end
    local pw, err = config.eval_password(acct.passwordeval)
    if not pw then die(EX.CONFIG, err) end
    return pw
  end
  local pw = prompt_password("Password for " .. user .. " at " .. host .. ": ")
  if pw then return pw end
  die(EX.CONFIG, "no password for " .. user .. ": use --password-file, SMTP_PASSWORD," ..
    " or password/passwordeval in the config file")
end

-- Addresses of a list of strings (each may hold a comma list): bare
-- addresses, or dies with EX_DATAERR.
local function bare_addresses(list, what)
  local address = require "smtp.address"
  local out = {}
  for _, s in ipairs(list or {}) do
    local parsed, err = address.parse_list(s)
    if not parsed then die(EX.DATAERR, what .. ": " .. err .. " in " .. string.format("%q", s)) end
    for _, m in ipairs(parsed) do out[#out + 1] = m.address end
  end
  return out
end

local function dedup(list)
  local out, seen = {}, {}
  for _, a in ipairs(list) do
    local key = a:lower()
    if not seen[key] then
      seen[key] = true
      out[#out + 1] = a
    end
  end
  return out
end

local function is_compose(opts)
  for _, k in ipairs(options.COMPOSE) do
    if opts[k] ~= nil then return true end
  end
  return false
end

-- The connection settings: command line, then the account, then
-- SMTP_SERVER (only when no account is in use), then the defaults.
local function connection(opts, acct, acct_name, getenv)
  local srv = opts.server
  if not srv and acct.server then srv = acct.server end
  if not srv and not acct_name then
    local env = getenv("SMTP_SERVER")
    if env and env ~= "" then
      local s, err = options.parse_server(env)
      if not s then die(EX.CONFIG, "SMTP_SERVER: " .. err) end
      srv = s
    end
  end
  srv = srv or { host = "localhost" }
  local c = {
    host = srv.host,
    tls = opts.tls or srv.tls or acct.tls or "auto",
    protocol = srv.protocol or acct.protocol,
    cafile = opts.cafile or acct.cafile,
    helo = opts.helo or acct.helo,
    timeout = opts.timeout or acct.timeout,
    user = opts.user or srv.user or acct.user,
    auth = opts.auth or acct.auth or nil,
    insecure_auth = opts.insecure_auth or acct.insecure_auth or nil,
  }
  c.port = opts.port or srv.port or acct.port or
    (c.tls == "implicit" and 465) or (c.protocol == "lmtp" and 24) or 25
  -- As the library does: port 465 speaks TLS from the start.
  if c.tls == "auto" and c.port == 465 then c.tls = "implicit" end
  return c
end

-- Compose mode: the message object from the options.
local function compose(opts, acct)
  local smtp = require "smtp"
  local from = opts.from or opts.f or acct.from
  if not from then die(EX.USAGE, "no sender: give --from (or from in the account)") end
  if opts.F and not from:find("<", 1, true) then
    from = { name = opts.F, address = options.trim(from) }
  end
  local to = {}
  for _, v in ipairs(opts.to or {}) do to[#to + 1] = v end
  for _, v in ipairs(opts.args) do to[#to + 1] = v end
  if #to == 0 and not opts.cc and not opts.bcc then
    die(EX.USAGE, "no recipients: give --to, --cc, --bcc or recipient arguments")
  end
  local spec = { from = from, to = to, cc = opts.cc, bcc = opts.bcc, subject = opts.subject }
  if opts.body then spec.text = opts.body end
  if opts.body_file then spec.text = read_file(opts.body_file, "body file " .. opts.body_file) end
  if opts.html_file then spec.html = read_file(opts.html_file, "HTML file " .. opts.html_file) end
  if opts.attach then
    spec.attachments = {}
    for _, path in ipairs(opts.attach) do
      local f, err = io.open(path, "rb")
      if not f then die(EX.NOINPUT, "cannot read attachment: " .. tostring(err)) end
      f:close()
      spec.attachments[#spec.attachments + 1] = { path = path }
    end
  end
  if opts.header then
    spec.headers = {}
    for _, h in ipairs(opts.header) do
      local name, value = options.split_header(h)
      spec.headers[#spec.headers + 1] = { name, value }
    end
  end
  local msg, err, info = smtp.message(spec)
  if not msg then die(M.exit_code(info), err) end
  local envelope = { from = msg.envelope.from, to = dedup(msg.envelope.to) }
  if opts.f then
    envelope.from = bare_addresses({ opts.f }, "-f")[1]
    if not envelope.from then die(EX.USAGE, "-f needs an address") end
  end
  return { object = msg, text = msg:tostring(), envelope = envelope, message_id = msg.message_id }
end

-- Sendmail mode: the message from standard input, its envelope from the
-- arguments and (-t) its headers.
local function sendmail(opts, acct, getenv)
  local message = require "smtp.message"
  local address = require "smtp.address"
  if execute("test -t 0") then
    io.stderr:write("smtp-send: reading the message (headers, empty line, body) from standard input;",
      " end it with Ctrl-D\n")
  end
  local raw = io.stdin:read("*a")
  if not raw or raw == "" then die(EX.DATAERR, "no message on standard input") end
  local long = rawmsg.long_line(raw)
  if long then
    die(EX.DATAERR, "message line " .. long .. " is longer than 998 octets (RFC 5322 2.1.1)")
  end
  local msg = rawmsg.parse(raw)

  local rcpts = bare_addresses(opts.args, "recipient")
  for _, field in ipairs({ "to", "cc", "bcc" }) do
    for _, a in ipairs(bare_addresses(opts[field], "--" .. field)) do rcpts[#rcpts + 1] = a end
  end
  if opts.t then
    local list, err = msg:header_recipients()
    if not list then die(EX.DATAERR, err) end
    for _, a in ipairs(list) do rcpts[#rcpts + 1] = a end
  end
  rcpts = dedup(rcpts)
  if #rcpts == 0 then
    die(EX.USAGE, opts.t and "no recipients in the To, Cc and Bcc headers nor in the arguments"
      or "no recipients: give them as arguments, or use -t to read them from the headers")
  end
  msg:remove("Bcc")
  msg:remove("Resent-Bcc")

  -- The envelope sender, as sendmail finds it: -f (or --from), the From
  -- header, the account's from, the login name at this host's name. A name
  -- without a domain (cron's "-f root", "From: root (Cron Daemon)") gives
  -- way to the account's from, or else gets this host's name.
  local host
  local function local_domain()
    if not host then
      local core = require "smtp.core"
      host = core.hostname(true) or "localhost"
    end
    return host
  end
  local function qualified(text, what)
    local list, err = address.parse_list(text, local_domain())
    if not list then die(EX.DATAERR, what .. ": " .. err .. " in " .. string.format("%q", text)) end
    if not list[1] then die(EX.USAGE, "no address in " .. string.format("%q", text)) end
    return list[1].address
  end
  local sender
  local given = opts.f or opts.from
  if given then
    if not given:find("@", 1, true) and acct.from then given = acct.from end
    sender = qualified(given, opts.f and "-f" or "--from")
  else
    local from = msg:get("From")
    local list = from and address.parse_list(from)
    if list and list[1] then sender = list[1].address end
    if not sender and acct.from then sender = bare_addresses({ acct.from }, "from")[1] end
    if not sender and from then
      list = address.parse_list(from, local_domain())
      sender = list and list[1] and list[1].address
    end
    if not sender then
      local login, lerr = config.login(getenv)
      if not login then
        die(EX.DATAERR, "no sender: give -f ADDR, a From header, or from in the account (" .. lerr .. ")")
      end
      sender = qualified(login, "login name")
    end
  end

  if not msg:has("From") then
    local value = sender
    if opts.F then value = address.format({ name = opts.F, address = sender }, 6) end
    msg:add("From", value)
  end
  if not msg:has("Date") then
    msg:add("Date", message.date and message.date() or os.date("!%a, %d %b %Y %H:%M:%S +0000"))
  end
  local message_id = msg:get("Message-ID")
  if not message_id then
    local domain = address.domain(sender) or "localhost"
    message_id = message.message_id and message.message_id(domain) or
      string.format("<%d.%d@%s>", os.time(), math.random(1, 2147483646), domain)
    msg:add("Message-ID", message_id)
  end
  local text = msg:tostring()
  return { text = text, envelope = { from = sender, to = rcpts }, message_id = message_id }
end

local function describe(code, enhanced, text)
  return require("smtp.errors").describe(code, enhanced, text)
end

local function seconds(v)
  return v and string.format("%.3f s", v) or nil
end

-- The send report (a result's or a failure's `session`) in a few lines,
-- for -v.
function M.report_lines(r)
  local out = {}
  local where
  if r.port then
    where = tostring(r.host) .. (r.address and r.address ~= r.host and " (" .. r.address .. ")" or "") ..
      " port " .. r.port
  else
    where = tostring(r.address or r.host)
  end
  out[1] = "session: " .. where .. ", " .. tostring(r.protocol) ..
    (r.tls and "" or ", no TLS") .. (r.auth and ", AUTH " .. r.auth or "") ..
    (r.reused and ", reused connection" or "")
  local t = r.tls
  if t then
    out[#out + 1] = "tls: " .. tostring(t.version) .. " " .. tostring(t.cipher) ..
      (t.verified and ", certificate verified" or ", certificate NOT verified")
    local p = t.peer
    if p then
      out[#out + 1] = "certificate: " .. tostring(p.subject) .. "; issuer " .. tostring(p.issuer) ..
        "; until " .. tostring(p.not_after) ..
        (p.san and p.san[1] and "; " .. table.concat(p.san, ", ") or "")
    end
  end
  local tm, parts = r.timings or {}, {}
  for _, k in ipairs({ "connect", "tls", "auth", "transaction", "total" }) do
    if tm[k] then parts[#parts + 1] = k .. " " .. seconds(tm[k]) end
  end
  if parts[1] then out[#out + 1] = "timings: " .. table.concat(parts, ", ") end
  return out
end

local function print_report(r)
  if type(r) ~= "table" then return end
  for _, line in ipairs(M.report_lines(r)) do
    io.stderr:write(printable("smtp-send: " .. line), "\n")
  end
end

-- --json: one line for the message: the result with ok = true, or
-- { ok = false, error =, info = }.
local function print_json(res, err, info)
  local obj
  if res then
    obj = { ok = true }
    for k, v in pairs(res) do obj[k] = v end
  else
    obj = { ok = false, error = err, info = info }
  end
  io.stdout:write(json.encode(obj, { arrays = { accepted = true, san = true } }), "\n")
  io.stdout:flush()
end

-- The size of the message on the wire (line ends as CRLF), for the bar.
local function wire_size(job)
  if job.object and job.object.size then return job.object.size end
  local ok, core = pcall(require, "smtp.core")
  if ok and core.inspect then
    local good, _, _, size = core.inspect(job.text)
    if good and size then return size end
  end
  return #job.text
end

local function run(argv, getenv)
  local opts, perr = options.parse(argv)
  if not opts then die(EX.USAGE, perr) end
  if opts.help then
    io.stdout:write(M.USAGE)
    return EX.OK
  end
  if opts.version then
    io.stdout:write("smtp-send (lua-smtp) ", M.version(), "\n")
    return EX.OK
  end
  local compose_mode = is_compose(opts)
  if compose_mode and opts.t then
    die(EX.USAGE, "-t reads a whole message from standard input: it does not go with --subject," ..
      " --body, --body-file, --html-file, --attach or --header")
  end
  local cfg_path = opts.config or config.default_path(getenv)
  local cfg, cerr = config.load(cfg_path, opts.config ~= nil)
  if not cfg then die(EX.CONFIG, cerr) end
  local acct, acct_name = config.select(cfg, opts.account)
  if not acct then die(EX.CONFIG, acct_name) end

  local conn = connection(opts, acct, acct_name, getenv)
  if opts.password_file and not conn.user then
    die(EX.USAGE, "--password-file needs a user (--user, user@ in the URL or user in the account)")
  end

  local job = compose_mode and compose(opts, acct) or sendmail(opts, acct, getenv)

  if opts.dry_run then
    io.stdout:write(job.text)
    io.stdout:flush()
    local e = { string.format("smtp-send: dry run: would connect to %s port %d (tls %s%s)%s",
      conn.host, conn.port, conn.tls, conn.protocol == "lmtp" and ", lmtp" or "",
      conn.user and " as " .. conn.user or "") }
    e[#e + 1] = "mail from: <" .. job.envelope.from .. ">"
    for _, r in ipairs(job.envelope.to) do e[#e + 1] = "rcpt to: <" .. r .. ">" end
    io.stderr:write(table.concat(e, "\n"), "\n")
    return EX.OK
  end

  -- The message goes as it is, with or without a progress bar (which
  -- counts at the connection): a string or the message object.
  local send = {
    host = conn.host, port = conn.port, tls = conn.tls, protocol = conn.protocol,
    cafile = conn.cafile, helo = conn.helo, timeout = conn.timeout,
    envelope = job.envelope, dsn = opts.dsn, message = job.object or job.text,
  }
  if opts.verbose > 0 then
    -- The library's transcript, with anything the server said made printable.
    local emit = require("smtp.transcript").printer(opts.verbose >= 2 and 2 or 1)
    send.debug = function(kind, text) emit(printable(kind), printable(text)) end
  end
  if conn.user then
    send.user, send.auth, send.insecure_auth = conn.user, conn.auth, conn.insecure_auth
    send.password = resolve_password(opts, acct, getenv, conn.user, conn.host)
  end

  local tty = execute("test -t 2")
  local bar, unwatch
  if opts.progress or (tty and not opts.no_progress and opts.verbose == 0 and #job.text >= M.PROGRESS_MIN) then
    local ok, core = pcall(require, "smtp.core")
    bar = progress.new{ total = wire_size(job), clock = ok and core.time or os.time }
    unwatch = bar:watch()
  end

  local smtp = require "smtp"
  local called, res, err, info = pcall(smtp.send, send)
  if unwatch then unwatch() end
  if not called then error(res, 0) end
  if bar then bar:finish(res ~= nil) end
  if opts.json then print_json(res, err, info) end
  if not res then
    if opts.verbose > 0 then print_report(info and info.session) end
    die(M.exit_code(info), err)
  end

  for _, r in ipairs(job.envelope.to) do
    local rep = res.refused and res.refused[r]
    if rep then
      io.stderr:write(printable("smtp-send: warning: recipient refused: " .. r .. " (" ..
        describe(rep.code, rep.enhanced, rep.message) .. ")"), "\n")
    end
  end
  if tty or opts.verbose > 0 then
    local n = #(res.accepted or {})
    io.stderr:write(printable(string.format("smtp-send: sent to %d recipient%s: %s", n, n == 1 and "" or "s",
      describe(res.code, res.enhanced, res.message))), "\n")
  end
  if opts.verbose > 0 then print_report(res.session) end
  return EX.OK
end

-- Runs smtp-send with argv (an array of strings); returns the exit status.
-- getenv defaults to os.getenv.
function M.main(argv, getenv)
  getenv = getenv or os.getenv
  local code
  local ok, e = xpcall(function() code = run(argv, getenv) end, function(x)
    if type(x) == "table" and x.exit then return x end
    return debug.traceback(tostring(x), 2)
  end)
  if ok then return code end
  if type(e) == "table" then
    if e.message then io.stderr:write("smtp-send: ", printable(e.message), "\n") end
    if e.exit == EX.USAGE then io.stderr:write("Try 'smtp-send --help' for more information.\n") end
    return e.exit
  end
  if tostring(e):find("interrupted!", 1, true) then return EX.SIGINT end
  io.stderr:write("smtp-send: internal error: ", printable(e, true), "\n")
  return EX.SOFTWARE
end

return M
