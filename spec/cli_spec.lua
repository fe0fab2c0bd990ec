-- Specs for bin/smtp-send and its modules (lua/smtp/cli/*.lua).
--
-- The script runs as its own process (`lua5.4 bin/smtp-send ...` through
-- os.execute) against bin/smtp-debug-server, which prints the envelope and
-- the message it got, or against the scriptable fake server for refusals.
-- Every run gets an empty XDG_CONFIG_HOME/HOME and no SMTP_* variables, so
-- the user's own configuration never leaks in.

local servers = require "spec.support.servers"
local util = require "spec.support.util"
local options = require "smtp.cli.options"
local config = require "smtp.cli.config"
local progress = require "smtp.cli.progress"
local rawmsg = require "smtp.cli.rawmsg"
local cli = require "smtp.cli.main"
local smtp = require "smtp"

local ROOT = servers.root
local SCRIPT = ROOT .. "/bin/smtp-send"
local LUA = os.getenv("LUA_SERVER") or "lua5.4"

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

local q, read_file, write_file = util.shell_quote, util.read_file, util.write_file
local sh, status = util.execute, util.exit_status

local tmpdirs = {}
local function tmpdir()
  local d = util.mkdtemp("lua-smtp-cli")
  tmpdirs[#tmpdirs + 1] = d
  return d
end

local HOME   -- an empty home for every run (set in setup)

-- Runs smtp-send with args (array). opts: stdin (string), env (table of
-- extra variables), home (instead of the empty one). Returns code, stdout,
-- stderr.
local function run(args, opts)
  opts = opts or {}
  local dir = tmpdir()
  local input, out, err = dir .. "/in", dir .. "/out", dir .. "/err"
  write_file(input, opts.stdin or "")
  local home = opts.home or HOME
  local env = { "env", "-u", "SMTP_PASSWORD", "-u", "SMTP_SERVER",
    "XDG_CONFIG_HOME=" .. q(home .. "/.config"), "HOME=" .. q(home) }
  local names = {}
  for k in pairs(opts.env or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do env[#env + 1] = k .. "=" .. q(opts.env[k]) end
  local words = {}
  for i, a in ipairs(args) do words[i] = q(a) end
  local cmd = table.concat(env, " ") .. " " .. LUA .. " " .. q(SCRIPT) .. " " ..
    table.concat(words, " ") .. " <" .. q(input) .. " >" .. q(out) .. " 2>" .. q(err)
  local code = status(os.execute(cmd))
  return code, read_file(out) or "", read_file(err) or ""
end

-- The message the debug server printed (the last one when several).
local function received(dbg)
  assert.is_true(dbg:wait(5), "debug server did not get a message")
  local out = dbg:output()
  local last
  local dashes = string.rep("%-", 10)
  for m in out:gmatch(dashes .. " MESSAGE FOLLOWS " .. dashes .. "\n(.-)%-%-" .. dashes .. " END MESSAGE") do
    last = m
  end
  assert.is_not_nil(last, "no message in: " .. out)
  return last
end

local function rcpts_of(msg)
  local list = {}
  for a in msg:gmatch("rcpt to: <([^>]*)>") do list[#list + 1] = a end
  return list
end

local function server_arg(srv)
  return "127.0.0.1:" .. srv.port
end

-- A fake server: greeting, EHLO answered with caps, then steps.
local function fake(steps, caps)
  local all = {
    { send = "220 fake ESMTP\r\n" }, { expect = "^EHLO " },
    { send = "250-fake\r\n" .. (caps or "") .. "250 ENHANCEDSTATUSCODES\r\n" },
  }
  for _, s in ipairs(steps) do all[#all + 1] = s end
  return servers.fake{ timeout = 10, steps = all }
end

local QUIT = { { expect = "^QUIT" }, { send = "221 2.0.0 bye\r\n" } }
local function with_quit(steps)
  for _, s in ipairs(QUIT) do steps[#steps + 1] = s end
  return steps
end

local COMPOSE = { "--from", "a@x.org", "--to", "b@y.org", "--subject", "s", "--body", "hello" }
local function compose_args(srv, extra)
  local args = { "--server", server_arg(srv) }
  for _, a in ipairs(COMPOSE) do args[#args + 1] = a end
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return args
end

-- Feature probes for what other milestones are still building: the reason
-- when the feature is missing, else nil.
local function missing_mime(field)
  local spec = { from = "a@x.org", to = "b@y.org" }
  if field == "html" then spec.html = "<p>x</p>" else spec.attachments = { { path = SCRIPT } } end
  local m, err = smtp.message(spec)
  if not m and err and err:find("not supported yet", 1, true) then
    return "the MIME composer (html, attachments) is not implemented yet: " .. err
  end
  return nil
end

local function missing_send_feature(extra)
  local opts = { host = "127.0.0.1", port = servers.free_port(), timeout = 2,
                 from = "a@x.org", to = "b@y.org", text = "x" }
  for k, v in pairs(extra) do opts[k] = v end
  local res, err = smtp.send(opts)
  if not res and err and err:find("not available in this build", 1, true) then
    return err
  end
  return nil
end

local function missing_auth()
  local err = missing_send_feature{ user = "u", password = "p" }
  return err and ("AUTH is not implemented yet: " .. err)
end

local function b64(s)
  return require("smtp.core").b64encode(s)
end

---------------------------------------------------------------------------

describe("smtp-send", function()
  setup(function()
    HOME = tmpdir()
  end)

  teardown(function()
    for _, d in ipairs(tmpdirs) do
      if d:match("^/tmp/") or d:match("^/var/") then os.execute("rm -rf " .. q(d)) end
    end
  end)

  after_each(function()
    servers.stop_all()
  end)

  -------------------------------------------------------------------------
  describe("option parsing", function()
    it("takes long options with a separate or an attached value", function()
      local o = assert(options.parse{ "--from", "a@x", "--subject=Hi there", "--to", "b@y",
        "--to=c@y,d@y", "--port", "2525", "--timeout=2.5", "--tls", "none", "r@z" })
      assert.equal("a@x", o.from)
      assert.equal("Hi there", o.subject)
      assert.same({ "b@y", "c@y,d@y" }, o.to)
      assert.equal(2525, o.port)
      assert.equal(2.5, o.timeout)
      assert.equal("none", o.tls)
      assert.same({ "r@z" }, o.args)
    end)

    it("takes sendmail clusters: -ti, -vv, -fsender, -f sender, -F name, -oi, -odi, -em", function()
      local o = assert(options.parse{ "-ti", "-vv", "-fme@x", "-F", "Me Myself", "-oi", "-odi", "-em",
        "-oem", "-U", "-bm", "-B", "8BITMIME", "--", "-notanoption@x" })
      assert.is_true(o.t)
      assert.is_true(o.i)
      assert.equal(2, o.verbose)
      assert.equal("me@x", o.f)
      assert.equal("Me Myself", o.F)
      assert.same({ "-notanoption@x" }, o.args)
      local o2 = assert(options.parse{ "-r", "bounce@x", "-C", "/etc/x", "-v" })
      assert.equal("bounce@x", o2.f)
      assert.equal("/etc/x", o2.config)
      assert.equal(1, o2.verbose)
    end)

    it("maps sendmail -N, -R and -V onto the DSN table", function()
      local o = assert(options.parse{ "-N", "failure,delay", "-R", "hdrs", "-V", "env42" })
      assert.same({ notify = { "failure", "delay" }, ret = "hdrs", envid = "env42" }, o.dsn)
      assert.same({ "never" }, assert(options.parse{ "-N", "never" }).dsn.notify)
    end)

    it("rejects unknown options, missing values and bad values", function()
      for _, argv in ipairs{
        { "--bogus" }, { "-q" }, { "-bp" }, { "-oX" }, { "--from" }, { "-f" },
        { "--port", "x" }, { "--port", "70000" }, { "--timeout", "0" }, { "--tls", "yes" },
        { "--header", "no colon" }, { "--header", "Bad Name: x" }, { "--help=1" },
        { "--body", "x", "--body-file", "f" }, { "--dsn", "ret=all" },
        { "--server", "ftp://x" }, { "--server", "host:" },
      } do
        local o, err = options.parse(argv)
        assert.is_nil(o, table.concat(argv, " "))
        assert.is_string(err)
      end
    end)

    it("refuses a password given as an argument, saying why", function()
      local o, err = options.parse{ "--password", "secret" }
      assert.is_nil(o)
      assert.matches("visible to other users", err)
      assert.is_nil(options.parse{ "--password=secret" })
    end)

    it("parses server specifications and URLs", function()
      assert.same({ host = "mail.example.com" }, options.parse_server("mail.example.com"))
      assert.same({ host = "mail.example.com", port = 2525 }, options.parse_server("mail.example.com:2525"))
      assert.same({ host = "::1", port = 25 }, options.parse_server("[::1]:25"))
      assert.same({ host = "::1" }, options.parse_server("::1"))
      assert.same({ host = "h", port = 25 }, options.parse_server("smtp://h"))
      assert.same({ host = "h", port = 587 }, options.parse_server("smtp://h:587/"))
      assert.same({ host = "h", port = 465, tls = "implicit" }, options.parse_server("smtps://h"))
      assert.same({ host = "h", port = 24, protocol = "lmtp" }, options.parse_server("lmtp://h"))
      assert.same({ host = "h", port = 465, tls = "implicit", user = "al@x" },
        options.parse_server("smtps://al%40x@h"))
      local s, err = options.parse_server("smtp://al:secret@h")
      assert.is_nil(s)
      assert.matches("no password in the server URL", err)
      assert.is_nil(options.parse_server("smtp://h/path"))
      assert.is_nil(options.parse_server("bad host"))
    end)

    it("parses --dsn lists", function()
      assert.same({ ret = "hdrs", notify = { "failure", "delay" }, envid = "X1", orcpt = true },
        options.parse_dsn("ret=hdrs,notify=failure+delay,envid=X1,orcpt"))
      assert.same({ ret = "full", notify = { "never" } }, options.parse_dsn("RET=FULL, notify=never"))
      -- several --dsn options add up
      local o = assert(options.parse{ "--dsn", "ret=hdrs", "--dsn", "notify=success" })
      assert.same({ ret = "hdrs", notify = { "success" } }, o.dsn)
      for _, bad in ipairs{ "ret=x", "notify=", "notify=never+failure", "notify=sometimes",
                            "envid=a b", "orcpt=maybe", "color=red" } do
        local d, err = options.parse_dsn(bad)
        assert.is_nil(d, bad)
        assert.is_string(err)
      end
    end)
  end)

  -------------------------------------------------------------------------
  describe("config file parsing", function()
    it("reads accounts, defaults, inheritance, quotes and the default line", function()
      local cfg = assert(config.parse(table.concat({
        "# a comment",
        "defaults",
        "tls starttls",
        "timeout 20",
        "",
        "account work",
        "server smtp.example.com:587",
        "user alice",
        'password "p a\\"ss"',
        "from Alice <alice@example.com>",
        "",
        "account backup : work",
        "user backup",
        "passwordeval echo hi",
        "  helo   me.example   ",
        "account local",
        "host smtps://127.0.0.1",
        "tls_trust_file /etc/ca.pem",
        "default backup",
      }, "\n"), "test"))
      assert.is_true(cfg.has_password)
      assert.equal("backup", cfg.default)
      assert.same({ "work", "backup", "local" }, cfg.order)
      local w = cfg.accounts.work
      assert.same({ host = "smtp.example.com", port = 587 }, w.server)
      assert.equal("starttls", w.tls)
      assert.equal(20, w.timeout)
      assert.equal('p a"ss', w.password)
      assert.equal("Alice <alice@example.com>", w.from)
      local b = cfg.accounts.backup
      assert.equal("backup", b.user)
      assert.is_nil(b.password)          -- passwordeval replaces the inherited password
      assert.equal("echo hi", b.passwordeval)
      assert.equal("me.example", b.helo)
      assert.same({ host = "smtp.example.com", port = 587 }, b.server)
      local l = cfg.accounts["local"]
      assert.same({ host = "127.0.0.1", port = 465, tls = "implicit" }, l.server)
      assert.equal("/etc/ca.pem", l.cafile)
      assert.equal("starttls", l.tls)    -- from defaults
      local acct, name = config.select(cfg)
      assert.equal("backup", name)
      assert.equal(b, acct)
      assert.equal(w, (config.select(cfg, "work")))
      assert.is_nil(config.select(cfg, "nope"))
    end)

    it("uses an account called default, else none", function()
      local cfg = assert(config.parse("account default\nserver a\naccount other\nserver b\n"))
      assert.is_false(cfg.has_password)
      local _, name = config.select(cfg)
      assert.equal("default", name)
      local acct, none = config.select(assert(config.parse("account x\nserver a\n")))
      assert.same({}, acct)
      assert.is_nil(none)
    end)

    it("reports errors with the file and line", function()
      for text, pattern in pairs{
        ["account a\ncolour red\n"] = "^f:2: unknown setting",
        ["server x\n"] = "^f:1: server outside an account",
        ["account a\nport 0\n"] = "^f:2: port: not a port number",
        ["account a\ntls on\n"] = "^f:2: tls: must be auto",
        ["account a\ninsecure_auth maybe\n"] = "^f:2: insecure_auth: must be on or off",
        ["account a\naccount a\n"] = "^f:2: account a is defined twice",
        ["account b : a\n"] = "^f:1: account a is not defined",
        ["account a\ndefault b\n"] = "^f: the default account b is not defined",
        ["account a\nserver smtp://u:p@h\n"] = "^f:2: server: no password",
      } do
        local cfg, err = config.parse(text, "f")
        assert.is_nil(cfg, text)
        assert.matches(pattern, err)
      end
    end)

    it("runs passwordeval and keeps its first line", function()
      assert.equal("pw1", config.eval_password("printf 'pw1\\nsecond\\n'"))
      local pw, err = config.eval_password("true")
      assert.is_nil(pw)
      assert.is_string(err)
      if _VERSION ~= "Lua 5.1" then
        assert.is_nil(config.eval_password("echo pw; exit 3"))
      end
    end)

    it("takes the login name from LOGNAME or USER only when it is the real user id's, else from id -run", function()
      local function fake_id(ids)
        return function(cmd)
          local name = cmd:match("^id %-u %-%- '(.*)'$")
          if name then return ids.users[name] end
          return ids[cmd]
        end
      end
      local env = {}
      local function getenv(k) return env[k] end
      local ids = { ["id -ru"] = "1000", ["id -run"] = "alice", users = { alias = "1000", bob = "1001" } }
      assert.equal("alice", config.login(getenv, fake_id(ids)))
      env = { LOGNAME = "alias" }                     -- another name of the same uid (sendmail's getlogin)
      assert.equal("alias", config.login(getenv, fake_id(ids)))
      env = { LOGNAME = "bob" }                       -- su to alice: bob's name stays in LOGNAME
      assert.equal("alice", config.login(getenv, fake_id(ids)))
      env = { LOGNAME = "bob", USER = "alias" }
      assert.equal("alias", config.login(getenv, fake_id(ids)))
      env = { LOGNAME = "nosuch" }
      assert.equal("alice", config.login(getenv, fake_id(ids)))
      env = {}
      local name, err = config.login(getenv, fake_id{ ["id -ru"] = "1234", users = {} })
      assert.is_nil(name)
      assert.matches("user id 1234 has no login name", err)
      name, err = config.login(getenv, fake_id{ users = {} })
      assert.is_nil(name)
      assert.matches("id %-ru failed", err)
      -- the real thing: whoever runs this spec
      local p = io.popen("id -run")
      local me = p:read("*l")
      p:close()
      assert.equal(me, config.login(function() return nil end))
      assert.equal(me, config.login(function(k) return k == "LOGNAME" and "no-such-user-x9" or nil end))
    end)

    it("tells whether a file is private to its owner", function()
      local d = tmpdir()
      local f = d .. "/c"
      write_file(f, "x")
      assert(sh("chmod 600 " .. q(f)))
      assert.is_true((config.private(f)))
      assert(sh("chmod 640 " .. q(f)))
      local private, mode = config.private(f)
      assert.is_false(private)
      assert.equal("-rw-r-----", mode)
      assert.is_nil(config.private(d .. "/missing"))
    end)

    it("trusts a file only when it is yours (or root's) and nobody else can write it", function()
      local d = tmpdir()
      local f = d .. "/c"
      write_file(f, "")
      for mode, ok in pairs{ ["600"] = true, ["644"] = true, ["755"] = true, ["444"] = true,
                             ["664"] = false, ["646"] = false, ["666"] = false, ["620"] = false } do
        assert(sh("chmod " .. mode .. " " .. q(f)))
        local good, err = config.trusted(f, "configuration file")
        if ok then
          assert.is_true(good, mode)
        else
          assert.is_nil(good, mode)
          assert.matches("^configuration file " .. f:gsub("%p", "%%%0") .. " is writable by ", err)
        end
      end
      assert(sh("chmod 666 " .. q(f)))
      local _, err = config.trusted(f, "configuration file")
      assert.equal("configuration file " .. f .. " is writable by group and others (-rw-rw-rw-):" ..
        " refusing to use it; run: chmod go-w '" .. f .. "'", err)
      assert(sh("chmod 620 " .. q(f)))
      assert.matches("writable by its group %(%-rw%-%-w%-%-%-%-%)", select(2, config.trusted(f, "x")))
      local good, merr = config.trusted(d .. "/missing", "password file")
      assert.is_nil(good)
      assert.matches("^password file .*/missing: cannot read the permissions", merr)
      assert.is_true(config.trusted("/dev/null", "configuration file"))
      -- Another user's file: only root can make one here.
      if config.uid() == 0 then
        assert(sh("chmod 600 " .. q(f) .. " && chown 4242 " .. q(f)))
        local g2, oerr = config.trusted(f, "configuration file")
        assert.is_nil(g2)
        assert.equal("configuration file " .. f .. " is owned by uid 4242, not by you (uid 0) or root:" ..
          " refusing to use it", oerr)
      end
    end)

    it("finds the program a passwordeval command names by a path", function()
      local env = function(n) return ({ HOME = "/home/u", D = "/opt" })[n] end
      for cmd, want in pairs{
        ["/usr/bin/gpg -d x.gpg"] = "/usr/bin/gpg", ["~/bin/pw.sh"] = "/home/u/bin/pw.sh",
        ["'/a b/pw' --x"] = "/a b/pw", ['"$HOME/pw"'] = "/home/u/pw", ["${D}/pw;x"] = "/opt/pw",
        ["A=1 B=2 ./pw.sh"] = "./pw.sh",
      } do
        assert.equal(want, config.command_path(cmd, env), cmd)
      end
      for _, cmd in ipairs{ "pass show mail/work", "echo pw", "GNUPGHOME=/x gpg -d f", "~bob/pw", '/bin/x"y"', "" } do
        assert.is_nil(config.command_path(cmd, env), cmd)
      end
    end)
  end)

  -------------------------------------------------------------------------
  describe("raw messages", function()
    it("unfolds headers, finds -t recipients and strips Bcc", function()
      local m = rawmsg.parse("From: A <a@x.org>\r\nTo: t1@y.org,\r\n\t\"T, Two\" <t2@y.org>\r\n" ..
        "Cc: c@y.org\r\nBcc: b1@y.org,\r\n b2@y.org\r\nSubject: s\r\n\r\nbody\r\nTo: not@header\r\n")
      assert.equal("\r\n", m.nl)
      assert.equal('t1@y.org, "T, Two" <t2@y.org>', m:get("to"))
      assert.same({ "t1@y.org", "t2@y.org", "c@y.org", "b1@y.org", "b2@y.org" }, m:header_recipients())
      assert.equal(1, m:remove("BCC"))
      assert.equal("From: A <a@x.org>\r\nTo: t1@y.org,\r\n\t\"T, Two\" <t2@y.org>\r\n" ..
        "Cc: c@y.org\r\nSubject: s\r\n\r\nbody\r\nTo: not@header\r\n", m:tostring())
    end)

    it("takes fields with white space before the colon (RFC 5322 4.5) as header fields", function()
      local raw = "From : A <a@x.org>\nTo : t@y.org\ncc\t: c@y.org\nBcc : b1@y.org,\n b2@y.org\n" ..
        "BCC\t\t:b3@y.org\nSubject  : after\nX-After: 1\n\nbody\n"
      local m = rawmsg.parse(raw)
      assert.equal(7, #m.fields)      -- From (not taken for an mbox From line) ... X-After
      assert.equal("A <a@x.org>", m:get("from"))
      assert.equal("after", m:get("Subject"))
      assert.same({ "t@y.org", "c@y.org", "b1@y.org", "b2@y.org", "b3@y.org" }, m:header_recipients())
      assert.equal(2, m:remove("Bcc"))
      assert.equal("From : A <a@x.org>\nTo : t@y.org\ncc\t: c@y.org\nSubject  : after\nX-After: 1\n\nbody\n",
        m:tostring())
      local r = rawmsg.parse("Resent-To : n@y.org\nRESENT-BCC\t: h@y.org\nTo: o@y.org\n\nx\n")
      assert.same({ "n@y.org", "h@y.org" }, r:header_recipients())
      assert.equal(1, r:remove("Resent-Bcc"))
      -- still not header fields: a name with a space in it, a line without a colon
      assert.same({}, rawmsg.parse("Not A Field: x\n\ny\n").fields)
      assert.equal(1, #rawmsg.parse("Subject: s\nno colon here\nTo: x@y\n").fields)
    end)

    it("prefers Resent-* recipients for a resent message", function()
      local m = rawmsg.parse("To: old@y.org\nResent-To: new@y.org\nResent-Bcc: hid@y.org\n\nx\n")
      assert.same({ "new@y.org", "hid@y.org" }, m:header_recipients())
    end)

    it("treats text without a header section as a body, and drops an mbox From line", function()
      local m = rawmsg.parse("just some text\nmore\n")
      assert.same({}, m.fields)
      m:add("From", "a@x.org")
      assert.equal("From: a@x.org\n\njust some text\nmore\n", m:tostring())
      local m2 = rawmsg.parse("From a@x.org Sat Nov 28 10:00:00 2026\nSubject: s\n\nb\n")
      assert.equal("Subject: s\n\nb\n", m2:tostring())
    end)

    it("finds lines longer than 998 octets", function()
      assert.is_nil(rawmsg.long_line(string.rep("x", 998) .. "\r\nok\n"))
      assert.equal(2, rawmsg.long_line("ok\n" .. string.rep("x", 999) .. "\n"))
    end)
  end)

  -------------------------------------------------------------------------
  describe("progress bar", function()
    it("renders bytes, percentage and rate", function()
      assert.equal("1.5 KiB", progress.bytes(1536))
      assert.equal("12 B", progress.bytes(12))
      -- a rate under 1 B/s (a slow start on a loaded machine) is whole bytes
      assert.equal("0 B/s", progress.render(10, 100, 0.5):match("%S+ %S+$"))
      assert.equal("[##########..........]   50%  5.0 MiB / 10.0 MiB  2.5 MiB/s",
        progress.render(5 * 1048576, 10 * 1048576, 2.5 * 1048576))
      assert.equal("100 B  10 B/s", progress.render(100, nil, 10))
    end)

    it("slices a source and counts what it hands out", function()
      local out = { parts = {} }
      function out:write(...) for _, s in ipairs{ ... } do self.parts[#self.parts + 1] = s end end
      local t = 0
      local bar = progress.new{ total = 200000, out = out, clock = function() t = t + 1 return t end }
      local chunks = { string.rep("a", 150000), string.rep("b", 50000) }
      local i = 0
      local src = bar:wrap(function() i = i + 1 return chunks[i] end)
      local got = {}
      for piece in src do got[#got + 1] = piece end
      assert.equal(table.concat(chunks), table.concat(got))
      for _, p in ipairs(got) do assert.is_true(#p <= progress.SLICE) end
      assert.equal(200000, bar.done)
      bar:finish(true)
      local text = table.concat(out.parts)
      assert.matches("100%%", text)
      assert.matches("\n$", text)
    end)

    it("counts what a transport writes and passes every call on to it", function()
      local out = { write = function() end }
      local bar = progress.new{ total = 100, out = out }
      local real = {}
      local calls = {}
      local methods = {
        send = function(self, s, i) calls[#calls + 1] = self == real and "send" return #s - i + 1 end,
        flush = function(self, eng) calls[#calls + 1] = self == real and "flush" eng.n = 0 return true end,
        receive = function(self) calls[#calls + 1] = self == real and "receive" return "220 x\r\n" end,
      }
      setmetatable(real, { __index = methods })
      local t = bar:transport(real)
      assert.equal(6, t:send("abcdefgh", 3))
      assert.is_true(t:flush({ n = 30, pending = function(e) return e.n end }))
      assert.equal("220 x\r\n", t:receive())
      assert.is_nil(t.pooled_state)
      assert.same({ "send", "flush", "receive" }, calls)
      assert.equal(36, bar.done)
      assert.is_true(t:send(string.rep("x", 500), 1) == 500)
      assert.equal(100, bar.done)              -- never more than the whole
    end)
  end)

  -------------------------------------------------------------------------
  describe("exit statuses", function()
    it("maps failure kinds to sysexits", function()
      local map = cli.exit_code
      assert.equal(65, map{ kind = "argument" })
      assert.equal(65, map{ kind = "size" })
      assert.equal(65, map{ kind = "data", code = 552, enhanced = "5.3.4" })
      assert.equal(75, map{ kind = "connect", temporary = true })
      assert.equal(75, map{ kind = "recipients", temporary = true })
      assert.equal(67, map{ kind = "recipients", temporary = false })
      assert.equal(77, map{ kind = "auth", temporary = false })
      assert.equal(75, map{ kind = "auth", temporary = true })
      assert.equal(76, map{ kind = "protocol", temporary = false })
      assert.equal(69, map{ kind = "sender", temporary = false })
      assert.equal(69, map{ kind = "tls", temporary = false })
      assert.equal(69, map{ kind = "unsupported", temporary = false })
    end)
  end)

  -------------------------------------------------------------------------
  describe("command line", function()
    it("--help lists the options and points to the manual for the exit statuses", function()
      local code, out = run{ "--help" }
      assert.equal(0, code)
      for _, s in ipairs{ "--server", "--password-file", "--dsn", "--dry-run", "-t", "SMTP_PASSWORD",
                          "man smtp-send (EXIT STATUS)" } do
        assert.is_truthy(out:find(s, 1, true), "missing " .. s)
      end
      -- documented once, in man/smtp-send.1 (spec/manpage_spec.lua)
      assert.is_nil(out:find("EX_USAGE", 1, true))
    end)

    it("--version prints 'smtp-send (lua-smtp) X.Y.Z', the rock's version, and exits 0", function()
      local code, out, err = run{ "--version" }
      assert.equal(0, code, err)
      assert.equal("", err)
      local version = smtp._VERSION:match("^lua%-smtp (%d+%.%d+%.%d+)$")
      assert.is_string(version, smtp._VERSION)
      assert.equal("smtp-send (lua-smtp) " .. version .. "\n", out)
      assert.equal(version, cli.version())
      -- and it goes before anything else: no config read, no message wanted
      assert.equal(0, (run({ "--version", "--config", "/nonexistent" })))
    end)

    it("exits 64 on a bad option, with one line and a hint", function()
      local code, out, err = run{ "--frmo", "a@x.org" }
      assert.equal(64, code)
      assert.equal("", out)
      assert.equal("smtp-send: unknown option --frmo\nTry 'smtp-send --help' for more information.\n", err)
      assert.equal(64, (run{ "--password", "x" }))
      assert.equal(64, (run{ "--port", "abc" }))
    end)

    it("exits 64 without sender or recipients, and for -t with compose options", function()
      assert.equal(64, (run{ "--to", "b@y.org", "--subject", "s", "--dry-run" }))
      assert.equal(64, (run{ "--from", "a@x.org", "--subject", "s", "--dry-run" }))
      assert.equal(64, (run({ "-t", "--subject", "s" }, { stdin = "To: b@y.org\n\nx\n" })))
      local code, _, err = run({ "-f", "a@x.org" }, { stdin = "Subject: no rcpt\n\nx\n" })
      assert.equal(64, code)
      assert.matches("no recipients", err)
    end)

    it("is found by a plain require when run outside the tree (LUA_PATH)", function()
      local d = tmpdir()
      assert(sh("cp " .. q(SCRIPT) .. " " .. q(d .. "/smtp-send")))
      local abs = io.popen("cd " .. q(ROOT) .. " && pwd"):read("*l")
      local cmd = "LUA_PATH=" .. q(abs .. "/lua/?.lua;;") .. " LUA_CPATH=" .. q(abs .. "/build/" .. LUA .. "/?.so;;") ..
        " " .. LUA .. " " .. q(d .. "/smtp-send") .. " --version >/dev/null 2>&1"
      assert.equal(0, status(os.execute(cmd)))
      -- without the path: installed system-wide (0), or it says it cannot load it (70)
      local cmd2 = "cd / && LUA_PATH=';;' LUA_CPATH=';;' " .. LUA .. " " .. q(d .. "/smtp-send") ..
        " --version >/dev/null 2>" .. q(d .. "/err")
      local code = status(os.execute(cmd2))
      if code ~= 0 then
        assert.equal(70, code)
        assert.matches("^smtp%-send: cannot load lua%-smtp: ", read_file(d .. "/err"))
      end
    end)
  end)

  -------------------------------------------------------------------------
  describe("compose mode", function()
    it("sends --from/--to/--cc/--bcc/--subject/--body/--header as given", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, out, err = run{ "--server", server_arg(dbg), "--from", "Me <me@x.org>",
        "--to", "a@y.org, B <b@y.org>", "--to", "c@y.org", "--cc", "d@y.org",
        "--bcc", "hidden@z.org", "--subject", "Grüße", "--body", "line 1\nline 2\n",
        "--header", "X-Mailer-Test: yes", "--header", "X-Two:2" }
      assert.equal(0, code, err)
      assert.equal("", out)
      assert.equal("", err)        -- quiet when stderr is not a terminal
      local msg = received(dbg)
      assert.matches("^mail from: <me@x.org>", msg)
      assert.same({ "a@y.org", "b@y.org", "c@y.org", "d@y.org", "hidden@z.org" }, rcpts_of(msg))
      assert.matches("\nFrom: Me <me@x.org>\n", msg)
      assert.matches("\nTo: a@y.org, B <b@y.org>, c@y.org\n", msg)
      assert.matches("\nCc: d@y.org\n", msg)
      assert.matches("\nSubject: =%?UTF%-8%?", msg)
      assert.matches("\nX%-Mailer%-Test: yes\n", msg)
      assert.matches("\nX%-Two: 2\n", msg)
      assert.matches("\n\nline 1\nline 2\n$", msg)
      assert.is_nil(msg:find("hidden@z.org\n[^r]"))
      assert.is_nil(msg:lower():find("\nbcc:"))
    end)

    it("takes recipient arguments as To, --body-file FILE and --body-file -", function()
      local d = tmpdir()
      write_file(d .. "/body.txt", "from a file\n")
      local dbg = servers.debug_server{ max_messages = 2 }
      local code, _, err = run{ "--server", server_arg(dbg), "--from", "a@x.org", "--subject", "f",
        "--body-file", d .. "/body.txt", "r1@y.org", "r2@y.org" }
      assert.equal(0, code, err)
      code, _, err = run({ "--server", server_arg(dbg), "--from", "a@x.org", "--subject", "stdin",
        "--body-file", "-", "r3@y.org" }, { stdin = "from stdin\n" })
      assert.equal(0, code, err)
      assert.is_true(dbg:wait(5))
      local out = dbg:output()
      assert.matches("rcpt to: <r1@y.org>\nrcpt to: <r2@y.org>\n", out)
      assert.matches("\nTo: r1@y.org, r2@y.org\n", out)
      assert.matches("\n\nfrom a file\n", out)
      assert.matches("rcpt to: <r3@y.org>\n", out)
      assert.matches("\n\nfrom stdin\n", out)
    end)

    it("accepts smtp://host:port and --port", function()
      local dbg = servers.debug_server{ max_messages = 2 }
      local args = { "--server", "smtp://127.0.0.1:" .. dbg.port }
      for _, a in ipairs(COMPOSE) do args[#args + 1] = a end
      local code, _, err = run(args)
      assert.equal(0, code, err)
      args[2] = "127.0.0.1"
      args[#args + 1] = "--port"
      args[#args + 1] = tostring(dbg.port)
      code, _, err = run(args)
      assert.equal(0, code, err)
      assert.is_true(dbg:wait(5))
    end)

    it("-v shows the transcript with the --helo name; -vv adds time stamps", function()
      local dbg = servers.debug_server{ max_messages = 2 }
      local code, _, err = run(compose_args(dbg, { "-v", "--helo", "cli.example" }))
      assert.equal(0, code, err)
      assert.matches("send: 'EHLO cli.example\\r\\n'", err, 1, true)
      assert.matches("smtp-send: sent to 1 recipient: 250 2.0.0 Ok", err, 1, true)
      code, _, err = run(compose_args(dbg, { "-vv" }))
      assert.equal(0, code, err)
      assert.matches("\n%d%d:%d%d:%d%d%.%d+ send: 'MAIL FROM:<a@x.org>", err)
    end)

    it("--dry-run prints the message and the envelope and connects to nothing", function()
      local port = servers.free_port()
      local code, out, err = run{ "--server", "127.0.0.1:" .. port, "--from", "a@x.org",
        "--to", "b@y.org", "--bcc", "c@y.org", "--subject", "dry", "--body", "text", "--dry-run" }
      assert.equal(0, code, err)
      assert.matches("^From: a@x.org\r\nTo: b@y.org\r\nSubject: dry\r\n", out)
      assert.matches("\r\n\r\ntext\r\n$", out)
      assert.is_nil(out:find("c@y.org", 1, true))
      assert.matches("would connect to 127.0.0.1 port " .. port .. " %(tls auto%)", err)
      assert.matches("\nmail from: <a@x.org>\nrcpt to: <b@y.org>\nrcpt to: <c@y.org>\n$", err)
    end)

    it("--dry-run shows what smtps://, lmtp:// and --tls choose", function()
      local function conn_line(args)
        local full = { "--dry-run", "--from", "a@x.org", "--to", "b@y.org", "--subject", "s" }
        for _, a in ipairs(args) do full[#full + 1] = a end
        local code, _, err = run(full)
        assert.equal(0, code, err)
        return err:match("would connect to ([^\n]*)")
      end
      assert.equal("mx.example port 465 (tls implicit)", conn_line{ "--server", "smtps://mx.example" })
      assert.equal("mx.example port 24 (tls auto, lmtp)", conn_line{ "--server", "lmtp://mx.example" })
      assert.equal("mx.example port 465 (tls implicit)", conn_line{ "--server", "mx.example", "--tls", "implicit" })
      assert.equal("localhost port 25 (tls none)", conn_line{ "--tls", "none" })
      assert.equal("mx.example port 465 (tls implicit)", conn_line{ "--server", "mx.example:465" })
      assert.equal("mx.example port 587 (tls starttls) as al",
        conn_line{ "--server", "smtp://al@mx.example:587", "--tls", "starttls" })
    end)

    it("shows a progress bar with --progress", function()
      local dbg = servers.debug_server{ max_messages = 1, quiet = true }
      local d = tmpdir()
      local line = string.rep("0123456789", 7) .. "\n"
      write_file(d .. "/big.txt", string.rep(line, 6000))           -- about 420 KB
      local args = { "--server", server_arg(dbg), "--from", "a@x.org", "--to", "b@y.org",
        "--subject", "big", "--body-file", d .. "/big.txt", "--progress" }
      local code, _, err = run(args)
      assert.equal(0, code, err)
      assert.matches("\r%[####################%]  100%%  4%d%d%.%d KiB / 4%d%d%.%d KiB  [%d.]+ [KMG]?i?B/s", err)
      assert.matches("\n$", err)
      assert.is_true(dbg:wait(5))
    end)

    it("--progress sends the same bytes with the same MAIL parameters as without it", function()
      -- The bar counts octets at the connection: the message still goes to
      -- the library as it is, so what it declares (SIZE, BODY=8BITMIME,
      -- SMTPUTF8) and sends is the same, in sendmail and compose mode.
      local caps = "250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 10000000\r\n"
      local function session(args, stdin)
        local srv = fake({ { serve = {
          { "^MAIL ", "250 2.1.0 ok\r\n" }, { "^RCPT ", "250 2.1.5 ok\r\n" },
          { "^DATA", "354 go\r\n", data = "250 2.0.0 queued\r\n" },
          { "^QUIT", "221 2.0.0 bye\r\n", close = true },
        } } }, caps)
        local full = { "--server", server_arg(srv) }
        for _, a in ipairs(args) do full[#full + 1] = a end
        local code, _, err = run(full, { stdin = stdin })
        assert.equal(0, code, err)
        assert.is_true(srv:wait(5))
        -- compose mode makes a new Date and Message-ID each time
        local got = srv:received():gsub("\r\nDate: [^\r]*", "\r\nDate: D")
          :gsub("\r\nMessage%-ID: <[^>]*>", "\r\nMessage-ID: <M>")
        return got, err
      end
      local head = "From: a@x.org\nTo: b@y.org\nDate: Sat, 28 Nov 2026 10:00:00 +0000\nMessage-ID: <p-1@x.org>\n"
      local utf8_head = head .. "Subject: Gr\195\188\195\159e\n\nbody\n"
      local ascii = head .. "Subject: plain\n\nline 1\nline 2\n"
      for _, case in ipairs{
        { args = { "-t" }, stdin = utf8_head,
          mail = "MAIL FROM:<a@x.org> SIZE=" .. (#utf8_head + 7) .. " SMTPUTF8 BODY=8BITMIME\r\n" },
        { args = { "-t" }, stdin = ascii, mail = "MAIL FROM:<a@x.org> SIZE=" .. (#ascii + 8) .. "\r\n" },
        { args = COMPOSE, mail = "^MAIL FROM:<a@x.org> SIZE=%d+\r\n$" },
      } do
        local plain = session(case.args, case.stdin)
        local args = { "--progress" }
        for _, a in ipairs(case.args) do args[#args + 1] = a end
        local with, err = session(args, case.stdin)
        assert.matches("100%%", err)
        local mail = plain:match("MAIL [^\n]*\n")
        if case.mail:sub(1, 1) == "^" then
          assert.matches(case.mail, mail)
        else
          assert.equal(case.mail, mail)
        end
        assert.equal(plain, with)
      end
    end)

    it("sends --html-file", function()
      local why = missing_mime("html")
      if why then pending(why) return end
      local d = tmpdir()
      write_file(d .. "/m.html", "<p>Hello <b>HTML</b></p>\n")
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run(compose_args(dbg, { "--html-file", d .. "/m.html" }))
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.matches("multipart/alternative", msg)
      assert.matches("text/html", msg)
    end)

    it("sends --attach files", function()
      local why = missing_mime("attachments")
      if why then pending(why) return end
      local d = tmpdir()
      write_file(d .. "/report.csv", "a,b\n1,2\n")
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run(compose_args(dbg, { "--attach", d .. "/report.csv" }))
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.matches("multipart/mixed", msg)
      assert.matches('filename="?report.csv', msg)
    end)

    it("exits 66 when --body-file or --attach cannot be read", function()
      local code, _, err = run{ "--from", "a@x.org", "--to", "b@y.org", "--body-file", "/nonexistent/body" }
      assert.equal(66, code)
      assert.matches("^smtp%-send: cannot read body file", err)
      assert.equal(66, (run{ "--from", "a@x.org", "--to", "b@y.org", "--attach", "/nonexistent/f" }))
    end)

    it("exits 65 for an invalid address, before connecting", function()
      local code, _, err = run{ "--server", "127.0.0.1:" .. servers.free_port(), "--from", "a@x.org",
        "--to", "b@y.org <", "--subject", "s" }
      assert.equal(65, code)
      assert.matches("^smtp%-send: argument: to:", err)
    end)
  end)

  -------------------------------------------------------------------------
  describe("sendmail mode", function()
    local MESSAGE = table.concat({
      "From: Alice <alice@x.org>",
      "To: to1@y.org,",
      "\t\"Two, T\" <to2@y.org>",
      "Cc: cc@y.org",
      "Bcc: hidden1@y.org,",
      " hidden2@y.org",
      "Subject: raw message",
      "Date: Sat, 28 Nov 2026 10:00:00 +0000",
      "Message-ID: <raw-1@x.org>",
      "",
      "Body line",
      ".",
      "Bcc: in the body stays",
      "",
    }, "\n")

    it("-t sends to To, Cc and Bcc, strips Bcc and keeps the rest byte for byte", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, out, err = run({ "-t", "-i", "--server", server_arg(dbg) }, { stdin = MESSAGE })
      assert.equal(0, code, err)
      assert.equal("", out .. err)
      local msg = received(dbg)
      assert.matches("^mail from: <alice@x.org>", msg)
      assert.same({ "to1@y.org", "to2@y.org", "cc@y.org", "hidden1@y.org", "hidden2@y.org" }, rcpts_of(msg))
      local body = msg:gsub("^.-\nrcpt to: [^\n]*\n(From:)", "%1")
      assert.equal(MESSAGE:gsub("Bcc: hidden1@y.org,\n hidden2@y.org\n", ""), body)
    end)

    it("-t adds the argument recipients; -f sets the envelope sender", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run({ "-t", "-oi", "-f", "bounces@x.org", "--server", server_arg(dbg),
        "extra@y.org", "cc@y.org" }, { stdin = MESSAGE })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.matches("^mail from: <bounces@x.org>", msg)
      assert.same({ "extra@y.org", "cc@y.org", "to1@y.org", "to2@y.org", "hidden1@y.org", "hidden2@y.org" },
        rcpts_of(msg))
      assert.matches("\nFrom: Alice <alice@x.org>\n", msg)
    end)

    it("without -t sends to the arguments only (and still strips Bcc)", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run({ "--server", server_arg(dbg), "only@y.org" }, { stdin = MESSAGE })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.same({ "only@y.org" }, rcpts_of(msg))
      assert.is_nil(msg:find("hidden1", 1, true))
    end)

    it("strips Resent-Bcc and uses the Resent-* recipients of a resent message", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run({ "-t", "--server", server_arg(dbg) }, { stdin =
        "Resent-From: r@x.org\nResent-To: new@y.org\nResent-Bcc: rbcc@y.org\nFrom: a@x.org\n" ..
        "To: old@y.org\nSubject: fwd\n\nx\n" })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.same({ "new@y.org", "rbcc@y.org" }, rcpts_of(msg))
      assert.is_nil(msg:find("Resent-Bcc", 1, true))
      assert.matches("\nResent%-To: new@y.org\n", msg)
    end)

    it("-t reads 'Bcc : addr' (white space before the colon) as a header: a recipient, stripped", function()
      -- RFC 5322 4.5 (obsolete syntax, still legal to receive): WSP before
      -- the colon. Such a Bcc must not end the header section and go out in
      -- the body to every recipient, with every field after it.
      local obs = table.concat({
        "From: Alice <alice@x.org>",
        "To : to@y.org",
        "cc\t: cc@y.org",
        "Bcc : hidden1@y.org,",
        " hidden2@y.org",
        "bCC\t\t:hidden3@y.org",
        "Subject : after the bcc",
        "X-After: yes",
        "Date: Sat, 28 Nov 2026 10:00:00 +0000",
        "Message-ID: <obs-1@x.org>",
        "",
        "body",
        "",
      }, "\n")
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run({ "-t", "--server", server_arg(dbg) }, { stdin = obs })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.same({ "to@y.org", "cc@y.org", "hidden1@y.org", "hidden2@y.org", "hidden3@y.org" }, rcpts_of(msg))
      local data = msg:gsub("^.-\nrcpt to: [^\n]*\n(From:)", "%1")
      assert.equal(obs:gsub("Bcc : hidden1@y.org,\n hidden2@y.org\nbCC\t\t:hidden3@y.org\n", ""), data)
      assert.is_nil(data:find("hidden", 1, true))

      -- Resent-Bcc in the same spelling: a resent message's recipients, stripped
      dbg = servers.debug_server{ max_messages = 1 }
      code, _, err = run({ "-t", "--server", server_arg(dbg) }, { stdin =
        "Resent-From: r@x.org\nResent-To\t: new@y.org\nRESENT-BCC : rbcc@y.org\nFrom: a@x.org\n" ..
        "To: old@y.org\nSubject: fwd\nDate: Sat, 28 Nov 2026 10:00:00 +0000\nMessage-ID: <obs-2@x.org>\n\nx\n" })
      assert.equal(0, code, err)
      msg = received(dbg)
      assert.same({ "new@y.org", "rbcc@y.org" }, rcpts_of(msg))
      assert.equal("Resent-From: r@x.org\nResent-To\t: new@y.org\nFrom: a@x.org\nTo: old@y.org\n" ..
        "Subject: fwd\nDate: Sat, 28 Nov 2026 10:00:00 +0000\nMessage-ID: <obs-2@x.org>\n\nx\n",
        (msg:gsub("^.-\nrcpt to: [^\n]*\n(Resent)", "%1")))
    end)

    it("strips 'Bcc :' without -t too, and keeps a leading 'From :' field (no mbox line)", function()
      local code, out, err = run({ "--dry-run", "only@y.org" }, { stdin =
        "From : a@x.org\nBcc : hidden@y.org\nSubject: s\n\nbody\n" })
      assert.equal(0, code, err)
      assert.is_nil(out:find("hidden", 1, true))
      assert.matches("^From : a@x.org\nSubject: s\nDate: [^\n]+\nMessage%-ID: [^\n]+\n\nbody\n$", out)
      assert.matches("\nmail from: <a@x.org>\nrcpt to: <only@y.org>\n$", err)
    end)

    it("adds From (with -F), Date and Message-ID when they are missing", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run({ "-f", "cron@x.org", "-F", "Cron Daemon", "--server", server_arg(dbg),
        "admin@y.org" }, { stdin = "Subject: cron output\n\nall good\n" })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.matches("^mail from: <cron@x.org>", msg)
      assert.matches("\nSubject: cron output\nFrom: Cron Daemon <cron@x.org>\nDate: %a%a%a, %d+ %a%a%a %d%d%d%d ", msg)
      assert.matches("\nMessage%-ID: <[%x.]+@x.org>\n\nall good\n$", msg)
    end)

    -- What sendmail and Postfix's sendmail do: the login name at this
    -- host's (fully qualified, when known) name.
    local function login_at_host()
      local p = io.popen("id -run")
      local login = p:read("*l")
      p:close()
      return login .. "@" .. require("smtp.core").hostname(true)
    end

    it("without From, -f or an account's from: the login name at this host's name, and a From header", function()
      local me = login_at_host()
      local mepat = me:gsub("%p", "%%%0")
      local cron = "To: admin@y.org\nSubject: Cron <root@host> backup\n\ndone\n"
      -- -t, as cronie calls it without -f
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run({ "-t", "-i", "--server", server_arg(dbg) }, { stdin = cron })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.matches("^mail from: <" .. mepat .. ">[ \n]", msg)
      assert.same({ "admin@y.org" }, rcpts_of(msg))
      assert.matches("\nSubject: Cron <root@host> backup\nFrom: " .. mepat .. "\nDate: ", msg)
      -- without -t, recipients as arguments; -F names the From; a stale LOGNAME is not believed
      dbg = servers.debug_server{ max_messages = 1 }
      code, _, err = run({ "-FCron Daemon", "--server", server_arg(dbg), "admin@y.org" },
        { stdin = cron, env = { LOGNAME = "no-such-user-x9", USER = "no-such-user-x9" } })
      assert.equal(0, code, err)
      msg = received(dbg)
      assert.matches("^mail from: <" .. mepat .. ">[ \n]", msg)
      assert.matches("\nFrom: Cron Daemon <" .. mepat .. ">\n", msg)
      assert.matches("\nMessage%-ID: <[%x.]+@" .. mepat:match("@(.*)$") .. ">\n", msg)
    end)

    it("without an account, a sender without a domain (-f root, 'From: root (...)') gets this host's name", function()
      local host = login_at_host():match("@(.*)$"):gsub("%p", "%%%0")
      local code, out, err = run({ "-t", "--dry-run" },
        { stdin = "From: root (Cron Daemon)\nTo: admin@y.org\nSubject: s\n\nx\n" })
      assert.equal(0, code, err)
      assert.matches("\nmail from: <root@" .. host .. ">\n", err)
      assert.matches("^From: root %(Cron Daemon%)\n", out)       -- the header as written
      code, out, err = run({ "-t", "-f", "root", "--dry-run" }, { stdin = "To: admin@y.org\n\nx\n" })
      assert.equal(0, code, err)
      assert.matches("\nmail from: <root@" .. host .. ">\n", err)
      assert.matches("^To: admin@y.org\nFrom: root@" .. host .. "\n", out)
      -- a From header with a domain is the sender, as before
      code, out, err = run({ "-t", "--dry-run" }, { stdin = "From: Ann <ann@x.org>\nTo: admin@y.org\n\nx\n" })
      assert.equal(0, code, err)
      assert.matches("\nmail from: <ann@x.org>\n", err)
      assert.matches("^From: Ann <ann@x.org>\nTo: admin@y.org\nDate: ", out)
    end)

    it("works as cron calls sendmail: From without a domain falls back to the account's from", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local home = tmpdir()
      assert(sh("mkdir -p " .. q(home .. "/.config/lua-smtp")))
      write_file(home .. "/.config/lua-smtp/config",
        "account relay\nserver 127.0.0.1:" .. dbg.port .. "\nfrom cron@x.org\ndefault relay\n")
      assert(sh("chmod 600 " .. q(home .. "/.config/lua-smtp/config")))   -- whatever the umask
      local code, _, err = run({ "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "admin@y.org" }, { home = home,
        stdin = "From: root (Cron Daemon)\nTo: admin@y.org\nSubject: Cron <root@host> backup\n\ndone\n" })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.matches("^mail from: <cron@x.org>", msg)
      assert.same({ "admin@y.org" }, rcpts_of(msg))
      assert.matches("\nFrom: root %(Cron Daemon%)\n", msg)
    end)

    it("works as cronie calls sendmail (-t -f root): the account's from replaces a bare name", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local home = tmpdir()
      assert(sh("mkdir -p " .. q(home .. "/.config/lua-smtp")))
      write_file(home .. "/.config/lua-smtp/config",
        "account relay\nserver 127.0.0.1:" .. dbg.port .. "\nfrom cron@x.org\ndefault relay\n")
      assert(sh("chmod 600 " .. q(home .. "/.config/lua-smtp/config")))   -- whatever the umask
      local code, _, err = run({ "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root" }, { home = home,
        stdin = "From: root (Cron Daemon)\nTo: admin@y.org\nSubject: Cron <root@host> backup\n\ndone\n" })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.matches("^mail from: <cron@x.org>", msg)
      assert.same({ "admin@y.org" }, rcpts_of(msg))
    end)

    it("takes a plain text without headers as the body", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run({ "-f", "a@x.org", "--server", server_arg(dbg), "b@y.org" },
        { stdin = "no headers here\njust text\n" })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.matches("\nFrom: a@x.org\nDate: [^\n]+\nMessage%-ID: [^\n]+\n\nno headers here\njust text\n$", msg)
    end)

    it("ignores the harmless sendmail flags and refuses other modes", function()
      local code, _, err = run({ "-t", "-i", "-oi", "-odi", "-oem", "-em", "-U", "-m", "-bm", "-Am",
        "-B", "8BITMIME", "--dry-run" }, { stdin = "From: a@x.org\nTo: b@y.org\n\nx\n" })
      assert.equal(0, code, err)
      assert.equal(64, (run({ "-bp" })))
      assert.equal(64, (run({ "-q" })))
    end)

    it("--dry-run prints the message without Bcc and the envelope", function()
      local code, out, err = run({ "-t", "--dry-run" }, { stdin = MESSAGE })
      assert.equal(0, code, err)
      assert.equal(MESSAGE:gsub("Bcc: hidden1@y.org,\n hidden2@y.org\n", ""), out)
      assert.matches("\nmail from: <alice@x.org>\nrcpt to: <to1@y.org>\n", err)
      assert.matches("rcpt to: <hidden2@y.org>\n$", err)
    end)

    it("exits 65 for an empty message, a bad header address or a line over 998 octets", function()
      assert.equal(65, (run({ "-t" }, { stdin = "" })))
      local code, _, err = run({ "-t" }, { stdin = "From: a@x.org\nTo: b@y.org <\n\nx\n" })
      assert.equal(65, code)
      assert.matches("To header", err)
      code, _, err = run({ "-t" }, { stdin = "From: a@x.org\nTo: b@y.org\n\n" .. string.rep("x", 1000) .. "\n" })
      assert.equal(65, code)
      assert.matches("line 4 is longer than 998", err)
    end)
  end)

  -------------------------------------------------------------------------
  describe("failures", function()
    it("exits 75 when the connection is refused (temporary)", function()
      local code, _, err = run{ "--server", "127.0.0.1:" .. servers.free_port(), "--from", "a@x.org",
        "--to", "b@y.org", "--subject", "s" }
      assert.equal(75, code)
      assert.matches("^smtp%-send: connect: ", err)
      local n = select(2, err:gsub("\n", ""))
      assert.equal(1, n)
    end)

    it("exits 75 on a timeout", function()
      local srv = servers.fake{ timeout = 10, steps = { { sleep = 3 }, { send = "220 late\r\n" } } }
      local code, _, err = run(compose_args(srv, { "--timeout", "0.5" }))
      assert.equal(75, code)
      assert.matches("^smtp%-send: timeout: ", err)
    end)

    it("exits 67 when every recipient is refused permanently", function()
      local srv = fake(with_quit{
        { expect = "^MAIL" }, { send = "250 2.1.0 ok\r\n" },
        { expect = "^RCPT" }, { send = "550 5.1.1 no such user\r\n" },
      })
      local code, _, err = run(compose_args(srv))
      assert.equal(67, code)
      assert.equal("smtp-send: recipients: every recipient was refused: b@y.org (550 5.1.1 no such user)\n", err)
    end)

    it("exits 75 when the recipients are refused temporarily", function()
      local srv = fake(with_quit{
        { expect = "^MAIL" }, { send = "250 2.1.0 ok\r\n" },
        { expect = "^RCPT" }, { send = "450 4.2.0 greylisted\r\n" },
      })
      local code, _, err = run(compose_args(srv))
      assert.equal(75, code)
      assert.matches("450 4.2.0 greylisted", err, 1, true)
    end)

    it("exits 0 and warns when only some recipients are refused", function()
      local srv = fake(with_quit{
        { expect = "^MAIL" }, { send = "250 2.1.0 ok\r\n" },
        { expect = "^RCPT TO:<b@y.org>" }, { send = "250 2.1.5 ok\r\n" },
        { expect = "^RCPT TO:<c@y.org>" }, { send = "550 5.1.1 unknown\r\n" },
        { expect = "^DATA" }, { send = "354 go\r\n" }, { read = "data" }, { send = "250 2.0.0 queued\r\n" },
      })
      local code, _, err = run(compose_args(srv, { "--to", "c@y.org" }))
      assert.equal(0, code, err)
      assert.equal("smtp-send: warning: recipient refused: c@y.org (550 5.1.1 unknown)\n", err)
    end)

    it("exits 69 when the server refuses the sender, the session or the message", function()
      local srv = fake(with_quit{ { expect = "^MAIL" }, { send = "553 5.7.1 sender rejected\r\n" } })
      local code, _, err = run(compose_args(srv))
      assert.equal(69, code)
      assert.matches("^smtp%-send: sender: sender refused: 553 5.7.1 sender rejected\n$", err)

      srv = servers.fake{ timeout = 10, steps = { { send = "554 5.3.2 go away\r\n" }, { read = "all" } } }
      code, _, err = run(compose_args(srv))
      assert.equal(69, code)
      assert.matches("^smtp%-send: greeting: ", err)

      srv = fake(with_quit{
        { expect = "^MAIL" }, { send = "250 2.1.0 ok\r\n" },
        { expect = "^RCPT" }, { send = "250 2.1.5 ok\r\n" },
        { expect = "^DATA" }, { send = "354 go\r\n" }, { read = "data" },
        { send = "554 5.6.0 content rejected\r\n" },
      })
      code, _, err = run(compose_args(srv))
      assert.equal(69, code)
      assert.matches("^smtp%-send: data: ", err)
    end)

    it("escapes control characters in server text it prints: errors", function()
      -- ESC ] 0 ; ... BEL retitles a terminal, ESC [ 2 J clears it; U+009B
      -- (C2 9B in UTF-8) is a CSI too. UTF-8 text stays readable.
      local srv = fake(with_quit{ { expect = "^MAIL" },
        { send = "553 5.7.1 \27]0;pwned\7\27[2J Gr\195\188\195\159e \194\155c1 \255\r\n" } })
      local code, _, err = run(compose_args(srv))
      assert.equal(69, code)
      assert.equal("smtp-send: sender: sender refused: 553 5.7.1 \\x1b]0;pwned\\x07\\x1b[2J" ..
        " Gr\195\188\195\159e \\xc2\\x9bc1 \\xff\n", err)
    end)

    it("escapes control characters in server text it prints: warnings, -v and the last line", function()
      local srv = fake(with_quit{
        { expect = "^MAIL" }, { send = "250 2.1.0 ok\r\n" },
        { expect = "^RCPT TO:<b@y.org>" }, { send = "250 2.1.5 ok\r\n" },
        { expect = "^RCPT TO:<c@y.org>" }, { send = "550 5.1.1 \27[1mno\27[0m\r\n" },
        { expect = "^DATA" }, { send = "354 go\r\n" }, { read = "data" },
        { send = "250 2.0.0 queued \27]0;pwned\7\r\n" },
      })
      local code, _, err = run(compose_args(srv, { "--to", "c@y.org", "-v" }))
      assert.equal(0, code, err)
      assert.is_nil((err:gsub("\n", "")):find("%c"), "a control character in: " .. err)
      assert.matches("\nsmtp%-send: warning: recipient refused: c@y.org %(550 5.1.1 \\x1b%[1mno\\x1b%[0m%)\n", err)
      -- then the send report (-v)
      assert.matches("\nsmtp%-send: sent to 1 recipient: 250 2.0.0 queued \\x1b%]0;pwned\\x07\n" ..
        "smtp%-send: session: ", err)
      assert.matches("\nreply: b'250 2.0.0 queued \\x1b]0;pwned\\x07\\r\\n'\n", err, 1, true)
    end)

    it("shows text as it is unless it holds control characters or is not UTF-8", function()
      local p = cli.printable
      assert.equal("plain ascii: (550) ok", p("plain ascii: (550) ok"))
      local utf8 = "Gr\195\188\195\159e \226\130\172 \240\159\152\128"
      assert.equal(utf8, p(utf8))
      assert.equal("\\x1b[31m\\x07\\x00\\x7f\\r\\n\\t", p("\27[31m\7\0\127\r\n\t"))
      -- C1 as UTF-8 and raw, truncated sequences, an overlong "/", a surrogate
      assert.equal("\\xc2\\x9b \\x9b \\xc3 \\xe2\\x82 \\xc0\\xaf \\xed\\xa0\\x80",
        p("\194\155 \155 \195 \226\130 \192\175 \237\160\128"))
      assert.equal("a\nb\tc\\x1b", p("a\nb\tc\27", true))
    end)

    it("exits 75 when the message is refused temporarily", function()
      local srv = fake(with_quit{
        { expect = "^MAIL" }, { send = "250 2.1.0 ok\r\n" },
        { expect = "^RCPT" }, { send = "250 2.1.5 ok\r\n" },
        { expect = "^DATA" }, { send = "354 go\r\n" }, { read = "data" },
        { send = "451 4.3.0 try later\r\n" },
      })
      assert.equal(75, (run(compose_args(srv))))
    end)

    it("exits 69 with a tls error for --tls starttls when the server offers no STARTTLS", function()
      local srv = fake(QUIT)
      local code, _, err = run(compose_args(srv, { "--tls", "starttls", "--timeout", "5" }))
      assert.equal(69, code)
      assert.matches("^smtp%-send: tls: ", err)
    end)

    it("passes the DSN options to the server", function()
      local srv = fake({
        { expect = "^MAIL" }, { send = "250 2.1.0 ok\r\n" },
        { expect = "^RCPT" }, { send = "250 2.1.5 ok\r\n" },
        { expect = "^DATA" }, { send = "354 go\r\n" }, { read = "data" }, { send = "250 2.0.0 ok\r\n" },
        { expect = "^QUIT" }, { send = "221 bye\r\n" },
      }, "250-DSN\r\n")
      local code, _, err = run(compose_args(srv, { "--dsn", "ret=hdrs,notify=failure+delay,envid=ID42,orcpt" }))
      assert.equal(0, code, err)
      assert.is_true(srv:wait(5))
      local got = srv:received()
      assert.matches("MAIL FROM:<a@x.org>[^\r]* RET=HDRS", got)
      assert.matches("MAIL FROM:<a@x.org>[^\r]* ENVID=ID42", got)
      assert.matches("RCPT TO:<b@y.org>[^\r]* NOTIFY=FAILURE,DELAY", got)
      assert.matches("RCPT TO:<b@y.org>[^\r]* ORCPT=rfc822;b@y.org", got)
    end)

    it("authenticates with --user and the password from SMTP_PASSWORD or --password-file", function()
      local why = missing_auth()
      if why then pending(why) return end
      local d = tmpdir()
      write_file(d .. "/pw", "file-secret\nignored second line\n")
      for _, case in ipairs{
        { env = { SMTP_PASSWORD = "env-secret" }, args = { "-v" }, pw = "env-secret" },
        { env = {}, args = { "--password-file", d .. "/pw" }, pw = "file-secret" },
      } do
        local srv = fake(with_quit{
          { expect = "^AUTH PLAIN " }, { send = "235 2.7.0 ok\r\n" },
          { expect = "^MAIL" }, { send = "250 2.1.0 ok\r\n" },
          { expect = "^RCPT" }, { send = "250 2.1.5 ok\r\n" },
          { expect = "^DATA" }, { send = "354 go\r\n" }, { read = "data" }, { send = "250 2.0.0 ok\r\n" },
        }, "250-AUTH PLAIN LOGIN\r\n")
        local args = compose_args(srv, { "--user", "alice", "--tls", "none", "--insecure-auth" })
        for _, a in ipairs(case.args) do args[#args + 1] = a end
        local code, _, err = run(args, { env = case.env })
        assert.equal(0, code, err)
        assert.is_true(srv:wait(5))
        assert.matches("AUTH PLAIN " .. b64("\0alice\0" .. case.pw), srv:received(), 1, true)
        -- the transcript never shows the credentials
        assert.is_nil(err:find(b64("\0alice\0" .. case.pw), 1, true))
        assert.is_nil(err:find(case.pw, 1, true))
      end
    end)

    it("exits 77 when authentication fails", function()
      local why = missing_auth()
      if why then pending(why) return end
      local srv = fake(with_quit{ { expect = "^AUTH LOGIN" }, { send = "535 5.7.8 bad credentials\r\n" } },
        "250-AUTH PLAIN LOGIN\r\n")
      local code, _, err = run(compose_args(srv, { "--user", "alice", "--tls", "none", "--insecure-auth",
        "--auth", "LOGIN" }), { env = { SMTP_PASSWORD = "wrong" } })
      assert.equal(77, code)
      assert.matches("^smtp%-send: auth: ", err)
    end)

    it("exits 78 when a user has no password and there is no terminal to ask on", function()
      local code, _, err = run{ "--user", "alice", "--from", "a@x.org", "--to", "b@y.org", "--subject", "s",
        "--server", "127.0.0.1:" .. servers.free_port() }
      -- With a controlling terminal the password would be prompted for: the
      -- spec must not hang, so only check when there is none.
      if code ~= 78 and io.open("/dev/tty", "r") then
        pending("a terminal is attached: smtp-send would prompt for the password")
        return
      end
      assert.equal(78, code)
      assert.matches("no password for alice", err)
    end)

    it("exits 64 for --password-file without a user", function()
      assert.equal(64, (run{ "--password-file", "/dev/null", "--from", "a@x.org", "--to", "b@y.org",
        "--subject", "s", "--dry-run" }))
    end)
  end)

  -------------------------------------------------------------------------
  describe("with a private Postfix (TLS, AUTH)", function()
    local postfix = require "spec.support.postfix"
    local pf, why

    setup(function()
      if not postfix.available() then
        why = "postfix and dovecot are not installed"
      else
        why = missing_send_feature{ tls = "implicit" }
        if why then
          why = "TLS is not implemented yet: " .. why
        else
          pf = postfix.start{ users = { { "alice", "secret" } } }
        end
      end
    end)

    teardown(function()
      if pf then pf:stop() end
    end)

    before_each(function()
      if pf then pf:clear() end
    end)

    local function send(args, opts)
      local full = { "--from", "a@x.org", "--to", "b@lua-smtp.test", "--subject", "via postfix",
        "--body", "hello postfix", "--timeout", "10" }
      for _, a in ipairs(args) do full[#full + 1] = a end
      return run(full, opts)
    end

    it("smtps:// with --cafile verifies the server; without it the certificate is refused (69)", function()
      if why then pending(why) return end
      local code, _, err = send{ "--server", "smtps://127.0.0.1:" .. pf.ports.smtps, "--cafile", pf.certs.ca }
      assert.equal(0, code, err)
      local msgs = pf:messages(1)
      assert.equal("a@x.org", msgs[1].sender)
      assert.matches("hello postfix", msgs[1].content)
      code, _, err = send{ "--server", "smtps://127.0.0.1:" .. pf.ports.smtps }
      assert.equal(69, code)
      assert.matches("^smtp%-send: tls: ", err)
    end)

    it("--tls starttls with --cafile", function()
      if why then pending(why) return end
      local code, _, err = send{ "--server", "127.0.0.1:" .. pf.ports.plain, "--tls", "starttls",
        "--cafile", pf.certs.ca, "-v" }
      assert.equal(0, code, err)
      assert.matches("send: 'STARTTLS\\r\\n'", err)
      assert.equal(1, #pf:messages(1))
    end)

    it("authenticates on the submission port (SMTP_PASSWORD); a wrong password exits 77", function()
      if why then pending(why) return end
      local args = { "--server", "127.0.0.1:" .. pf.ports.submission, "--tls", "starttls",
        "--cafile", pf.certs.ca, "--user", "alice" }
      local code, _, err = send(args, { env = { SMTP_PASSWORD = "secret" } })
      assert.equal(0, code, err)
      assert.equal(1, #pf:messages(1))
      code, _, err = send(args, { env = { SMTP_PASSWORD = "wrong" } })
      assert.equal(77, code)
      assert.matches("^smtp%-send: auth: ", err)
    end)

    it("uses an account with passwordeval in sendmail mode", function()
      if why then pending(why) return end
      local home = tmpdir()
      assert(sh("mkdir -p " .. q(home .. "/.config/lua-smtp")))
      write_file(home .. "/.config/lua-smtp/config", table.concat({
        "account pf",
        "server 127.0.0.1:" .. pf.ports.submission,
        "tls starttls",
        "cafile " .. pf.certs.ca,
        "user alice",
        "passwordeval printf 'secret\\n'",
        "from cron@x.org",
        "default pf", "" }, "\n"))
      assert(sh("chmod 600 " .. q(home .. "/.config/lua-smtp/config")))
      local code, _, err = run({ "-t" }, { home = home,
        stdin = "To: b@lua-smtp.test\nBcc: c@lua-smtp.test\nSubject: cron\n\nfrom cron\n" })
      assert.equal(0, code, err)
      local msgs = pf:messages(2)
      assert.equal(2, #msgs)
      assert.equal("cron@x.org", msgs[1].sender)
      assert.is_nil(msgs[1].content:find("Bcc:", 1, true))
    end)
  end)

  -------------------------------------------------------------------------
  describe("accounts", function()
    local function home_with_config(text, mode)
      local home = tmpdir()
      assert(sh("mkdir -p " .. q(home .. "/.config/lua-smtp")))
      local path = home .. "/.config/lua-smtp/config"
      write_file(path, text)
      assert(sh("chmod " .. (mode or "600") .. " " .. q(path)))
      return home, path
    end

    it("sends through the default account: server and from", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local home = home_with_config("account other\nserver 127.0.0.1:1\n\naccount local\nserver 127.0.0.1:" ..
        dbg.port .. "\nfrom Config Sender <cfg@x.org>\nhelo cfg.example\n\ndefault local\n", "644")
      local code, _, err = run({ "--to", "b@y.org", "--subject", "s", "--body", "b" }, { home = home })
      assert.equal(0, code, err)
      local msg = received(dbg)
      assert.matches("^mail from: <cfg@x.org>", msg)
      assert.matches("\nFrom: Config Sender <cfg@x.org>\n", msg)
    end)

    it("--account picks another account; --server overrides it; SMTP_SERVER does not", function()
      local home = home_with_config("account a\nserver a.example\nport 2525\ntls none\n" ..
        "account b\nserver smtps://b.example\nuser bob\n\ndefault a\n")
      local function conn_line(args, env)
        local full = { "--dry-run", "--from", "x@x.org", "--to", "b@y.org", "--subject", "s" }
        for _, a in ipairs(args) do full[#full + 1] = a end
        local code, _, err = run(full, { home = home, env = env })
        assert.equal(0, code, err)
        return err:match("would connect to ([^\n]*)")
      end
      assert.equal("a.example port 2525 (tls none)", conn_line({}, { SMTP_SERVER = "env.example" }))
      assert.equal("b.example port 465 (tls implicit) as bob", conn_line{ "--account", "b" })
      assert.equal("other.example port 2525 (tls none)", conn_line{ "--server", "other.example" })
      local code, _, err = run({ "--account", "nope", "--dry-run" }, { home = home })
      assert.equal(78, code)
      assert.matches("no account \"nope\"", err)
    end)

    it("uses SMTP_SERVER when no account is in use", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local code, _, err = run({ "--from", "a@x.org", "--to", "b@y.org", "--subject", "env" },
        { env = { SMTP_SERVER = "smtp://127.0.0.1:" .. dbg.port } })
      assert.equal(0, code, err)
      assert.matches("\nSubject: env\n", received(dbg))
    end)

    it("refuses (78) a config holding a password that others can read, accepts it at 600", function()
      local text = "account main\nserver 127.0.0.1\nuser alice\npassword s3cret\nfrom a@x.org\ndefault main\n"
      local args = { "--to", "b@y.org", "--subject", "s", "--dry-run" }
      local home, path = home_with_config(text, "644")
      local code, out, err = run(args, { home = home })
      assert.equal(78, code)
      assert.equal("", out)
      assert.equal("smtp-send: " .. path .. " holds a password but is accessible by others (-rw-r--r--);" ..
        " run: chmod 600 '" .. path .. "'\n", err)
      assert(sh("chmod 640 " .. q(path)))
      assert.equal(78, (run(args, { home = home })))
      assert(sh("chmod 600 " .. q(path)))
      code, out, err = run(args, { home = home })
      assert.equal(0, code, err)
      assert.matches("as alice", err)
      assert.matches("^From: a@x.org\r\n", out)
    end)

    -- A server that takes AUTH PLAIN and one message.
    local function auth_server()
      return fake(with_quit{
        { expect = "^AUTH PLAIN " }, { send = "235 2.7.0 ok\r\n" },
        { expect = "^MAIL" }, { send = "250 2.1.0 ok\r\n" },
        { expect = "^RCPT" }, { send = "250 2.1.5 ok\r\n" },
        { expect = "^DATA" }, { send = "354 go\r\n" }, { read = "data" }, { send = "250 2.0.0 ok\r\n" },
      }, "250-AUTH PLAIN\r\n")
    end
    local SEND = { "--to", "b@y.org", "--subject", "s", "--body", "x" }

    it("refuses (78) a config that others can write, whatever it holds: nothing runs, nothing is sent", function()
      local d = tmpdir()
      local marker = d .. "/passwordeval-ran"
      local srv = auth_server()
      local home, path = home_with_config("account main\nserver 127.0.0.1:" .. srv.port ..
        "\ntls none\ninsecure_auth on\nuser alice\npasswordeval touch " .. q(marker) .. "; echo pw\n" ..
        "from a@x.org\ndefault main\n", "666")
      local _
      local code, out, err = run(SEND, { home = home })
      assert.equal(78, code)
      assert.equal("", out)
      assert.equal("smtp-send: configuration file " .. path .. " is writable by group and others (-rw-rw-rw-):" ..
        " refusing to use it; run: chmod go-w '" .. path .. "'\n", err)
      for mode, who in pairs{ ["664"] = "its group", ["646"] = "others", ["620"] = "its group" } do
        assert(sh("chmod " .. mode .. " " .. q(path)))
        code, _, err = run(SEND, { home = home })
        assert.equal(78, code, mode)
        assert.matches("^smtp%-send: configuration file .* is writable by " .. who .. " %(", err)
      end
      -- Nothing secret in it: refused all the same.
      local home2, path2 = home_with_config("account relay\nserver 127.0.0.1:" .. srv.port ..
        "\nfrom a@x.org\ndefault relay\n", "666")
      code, _, err = run(SEND, { home = home2 })
      assert.equal(78, code)
      assert.matches(path2, err, 1, true)
      code, _, err = run({ "--config", path2, "--dry-run", "--to", "b@y.org", "--subject", "s" })
      assert.equal(78, code)
      assert.matches("is writable by group and others", err)
      assert.is_nil(read_file(marker), "passwordeval ran")
      assert.equal("", srv:received())
      -- The same file, writable by its owner only, is used.
      local why = missing_auth()
      if why then pending(why) return end
      assert(sh("chmod 644 " .. q(path)))
      code, _, err = run(SEND, { home = home })
      assert.equal(0, code, err)
      assert.is_true(srv:wait(5))
      assert.is_string(read_file(marker))
      assert.matches("AUTH PLAIN " .. b64("\0alice\0pw"), srv:received(), 1, true)
    end)

    it("refuses (78) a config that belongs to another user (not root)", function()
      if config.uid() ~= 0 then
        pending("only root can give a file to another user here")
        return
      end
      local srv = auth_server()
      local home, path = home_with_config("account relay\nserver 127.0.0.1:" .. srv.port ..
        "\nfrom a@x.org\ndefault relay\n", "600")
      assert(sh("chown 4242 " .. q(path)))
      local code, _, err = run(SEND, { home = home })
      assert.equal(78, code)
      assert.equal("smtp-send: configuration file " .. path .. " is owned by uid 4242, not by you (uid 0)" ..
        " or root: refusing to use it\n", err)
      assert.equal("", srv:received())
    end)

    it("refuses (78) a passwordeval program or a --password-file that others can write", function()
      local why = missing_auth()
      if why then pending(why) return end
      local srv = auth_server()
      local home, _ = home_with_config("account main\nserver 127.0.0.1:" .. srv.port ..
        "\ntls none\ninsecure_auth on\nuser alice\npasswordeval ~/bin/pw.sh\nfrom a@x.org\ndefault main\n")
      local script, marker = home .. "/bin/pw.sh", home .. "/pw-ran"
      assert(sh("mkdir " .. q(home .. "/bin")))
      write_file(script, "#!/bin/sh\ntouch " .. q(marker) .. "\necho pw\n")
      assert(sh("chmod 777 " .. q(script)))
      local code, _, err = run(SEND, { home = home })
      assert.equal(78, code)
      assert.equal("smtp-send: passwordeval program " .. script .. " is writable by group and others" ..
        " (-rwxrwxrwx): refusing to use it; run: chmod go-w '" .. script .. "'\n", err)
      assert.is_nil(read_file(marker), "passwordeval ran")

      local pwfile = home .. "/pw"
      write_file(pwfile, "pw\n")
      assert(sh("chmod 602 " .. q(pwfile)))
      code, _, err = run({ "--server", server_arg(srv), "--tls", "none", "--insecure-auth", "--user", "alice",
        "--password-file", pwfile, "--from", "a@x.org", "--to", "b@y.org", "--subject", "s" })
      assert.equal(78, code)
      assert.equal("smtp-send: password file " .. pwfile .. " is writable by others (-rw-----w-):" ..
        " refusing to use it; run: chmod go-w '" .. pwfile .. "'\n", err)
      assert.equal("", srv:received())

      assert(sh("chmod 755 " .. q(script)))
      code, _, err = run(SEND, { home = home })
      assert.equal(0, code, err)
      assert.is_true(srv:wait(5))
      assert.is_string(read_file(marker))
      assert.matches("AUTH PLAIN " .. b64("\0alice\0pw"), srv:received(), 1, true)
    end)

    it("allows a readable config with passwordeval instead of password", function()
      local home = home_with_config("account main\nserver 127.0.0.1\nuser alice\npasswordeval echo pw\n" ..
        "default main\n", "644")
      local code, _, err = run({ "--from", "a@x.org", "--to", "b@y.org", "--subject", "s", "--dry-run" },
        { home = home })
      assert.equal(0, code, err)
    end)

    it("exits 78 for a failing passwordeval", function()
      local home = home_with_config("account main\nserver 127.0.0.1:" .. servers.free_port() ..
        "\nuser alice\npasswordeval exit 1\ndefault main\n")
      local code, _, err = run({ "--from", "a@x.org", "--to", "b@y.org", "--subject", "s" }, { home = home })
      assert.equal(78, code)
      assert.matches("passwordeval", err)
    end)

    it("exits 78 for a syntax error, a missing --config file and an unknown --account", function()
      local home, path = home_with_config("account a\nsmtp-server x\n")
      local code, _, err = run({ "--dry-run" }, { home = home })
      assert.equal(78, code)
      assert.equal("smtp-send: " .. path .. ":2: unknown setting \"smtp-server\"\n", err)
      code, _, err = run{ "--config", "/nonexistent/config", "--dry-run" }
      assert.equal(78, code)
      assert.matches("cannot read", err)
      assert.equal(78, (run{ "--account", "x", "--dry-run" }))
    end)

    it("--config and -C name the file explicitly", function()
      local d = tmpdir()
      local path = d .. "/cfg"
      write_file(path, "account x\nserver cfg.example:2600\nfrom c@x.org\ndefault x\n")
      assert(sh("chmod 644 " .. q(path)))
      for _, flag in ipairs{ "--config", "-C" } do
        local code, _, err = run{ flag, path, "--to", "b@y.org", "--subject", "s", "--dry-run" }
        assert.equal(0, code, err)
        assert.matches("would connect to cfg.example port 2600", err)
      end
    end)
  end)
end)
