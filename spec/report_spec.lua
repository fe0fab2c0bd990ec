-- The send report (docs/api.md, "The send report"): every result and every
-- failure's info carries `session`. Against the scriptable fake server
-- (plain, STARTTLS with the test CA through LuaSec, LMTP), a private
-- Postfix (STARTTLS, AUTH) and Dovecot LMTP on a Unix socket; the
-- certificate parser (core.tls_cert_info); the JSON encoder of smtp-send;
-- smtp-send -v and --json. Times are only checked for sense (numbers, not
-- negative, parts within the total), never against thresholds.
local smtp = require "smtp"
local core = require "smtp.core"
local json = require "smtp.cli.json"
local servers = require "spec.support.servers"
local certs = require "spec.support.certs"
local postfix = require "spec.support.postfix"
local lmtp = require "spec.support.dovecot_lmtp"


local HELO = "client.example"
local FROM, TO, TO2 = "sender@example.org", "rcpt@example.net", "other@example.net"
local EPS = 1e-6

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local tmp, C
local function tmpdir()
  if not tmp then
    local p = assert(io.popen("mktemp -d /tmp/lua-smtp-report.XXXXXX"))
    tmp = p:read("*l")
    p:close()
    assert(tmp and tmp ~= "", "mktemp -d failed")
  end
  return tmp
end

local function shared_certs()
  if not C then C = certs.make(tmpdir() .. "/certs") end
  return C
end

-- The end of validity of a PEM certificate as ISO 8601 UTC, from openssl.
local function not_after_of(pem)
  local p = assert(io.popen("openssl x509 -noout -enddate -dateopt iso_8601 -in " .. q(pem) .. " 2>/dev/null"))
  local line = p:read("*l") or ""
  p:close()
  -- "notAfter=2036-12-02 09:03:22Z"
  local d, t = line:match("notAfter=(%d+%-%d+%-%d+) (%d+:%d+:%d+)Z")
  if d then return d .. "T" .. t .. "Z" end
  p = assert(io.popen("openssl x509 -noout -enddate -in " .. q(pem)))
  line = p:read("*l") or ""
  p:close()
  local mon, day, hms, year = line:match("notAfter=(%a+)%s+(%d+) (%d+:%d+:%d+) (%d+) GMT")
  local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
                   Oct = 10, Nov = 11, Dec = 12 }
  return string.format("%s-%02d-%02dT%sZ", year, months[mon], tonumber(day), hms)
end

local function der_of(pem)
  local out = tmpdir() .. "/cert.der"
  assert(os.execute("openssl x509 -in " .. q(pem) .. " -outform DER -out " .. q(out)))
  return assert(read_file(out))
end

-- Timings: numbers, not negative, the parts within the total.
local function check_timings(t, parts)
  assert.is_table(t)
  assert.is_number(t.total)
  assert.is_true(t.total >= 0)
  local sum = 0
  for _, k in ipairs(parts) do
    assert.is_number(t[k], "timings." .. k)
    assert.is_true(t[k] >= 0, "timings." .. k .. " is negative")
    sum = sum + t[k]
  end
  assert.is_true(t.total + EPS >= sum, string.format("total %.6f < sum of parts %.6f", t.total, sum))
  for _, k in ipairs({ "connect", "tls", "auth", "transaction" }) do
    local listed = false
    for _, p in ipairs(parts) do if p == k then listed = true end end
    if not listed then assert.is_nil(t[k], "timings." .. k .. " should be absent") end
  end
end

local GREET = { send = "220 fake.test ESMTP\r\n" }
local CAPS = "250-fake.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 ENHANCEDSTATUSCODES\r\n"

local function plain_steps(rules)
  return {
    GREET, { expect = "^EHLO " }, { send = CAPS },
    { serve = rules or {
      { "^MAIL ", "250 2.1.0 ok\r\n" },
      { "^RCPT ", "250 2.1.5 ok\r\n" },
      { "^DATA", "354 go\r\n", data = "250 2.0.0 queued\r\n" },
      { "^RSET", "250 2.0.0 ok\r\n" },
      { "^QUIT", "221 2.0.0 bye\r\n", close = true },
    } },
  }
end

local function msg(extra)
  local m = { from = FROM, to = TO, subject = "report", text = "hello\n" }
  for k, v in pairs(extra or {}) do m[k] = v end
  return m
end

local function send_opts(port, extra)
  local o = msg{ host = "127.0.0.1", port = port, helo = HELO, timeout = 5, tls = "none" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

describe("the send report", function()
  lazy_teardown(function()
    servers.stop_all()
    postfix.stop_all()
    if lmtp.stop_all then lmtp.stop_all() end
    if tmp then os.execute("rm -rf " .. q(tmp)) end
  end)

  after_each(function()
    servers.stop_all()
  end)

  it("a result carries the server, the capabilities and the timings", function()
    local srv = servers.fake{ timeout = 10, steps = plain_steps() }
    local res, err = smtp.send(send_opts(srv.port))
    assert.is_table(res, err)
    local s = res.session
    assert.is_table(s)
    assert.equal("127.0.0.1", s.host)
    assert.equal("127.0.0.1", s.address)
    assert.equal(srv.port, s.port)
    assert.equal("smtp", s.protocol)
    assert.is_nil(s.tls)
    assert.is_nil(s.auth)
    assert.is_false(s.reused)
    assert.is_true(s.capabilities.PIPELINING)
    assert.equal("1000000", s.capabilities.SIZE)
    check_timings(s.timings, { "connect", "transaction" })
  end)

  it("host localhost: address is the one connected to", function()
    local srv = servers.fake{ timeout = 10, steps = plain_steps() }
    local res, err = smtp.send(send_opts(srv.port, { host = "localhost" }))
    assert.is_table(res, err)
    assert.equal("localhost", res.session.host)
    assert.equal("127.0.0.1", res.session.address)   -- the fake server listens there only
  end)

  it("a failure before connecting carries host, port and timings.connect", function()
    local port = servers.free_port()
    local res, _, info = smtp.send(send_opts(port, { timeout = 2 }))
    assert.is_nil(res)
    assert.equal("connect", info.kind)
    local s = info.session
    assert.is_table(s)
    assert.equal("127.0.0.1", s.host)
    assert.equal(port, s.port)
    assert.equal("smtp", s.protocol)
    assert.is_nil(s.address)
    assert.is_nil(s.tls)
    check_timings(s.timings, { "connect" })
    -- refused before any connection: what the options say, no timings
    local r2, _, info2 = smtp.send(send_opts(port, { to = "not an address" }))
    assert.is_nil(r2)
    assert.equal("argument", info2.kind)
    assert.equal(port, info2.session.port)
    check_timings(info2.session.timings, {})
    -- connect: the same on smtp.connect
    local s3, _, info3 = smtp.connect{ host = "127.0.0.1", port = port, timeout = 2, tls = "none" }
    assert.is_nil(s3)
    assert.equal(port, info3.session.port)
    assert.is_number(info3.session.timings.connect)
  end)

  it("a refused transaction's info carries the report with its transaction time", function()
    local srv = servers.fake{ timeout = 10, steps = plain_steps{
      { "^MAIL ", "250 2.1.0 ok\r\n" },
      { "^RCPT ", "550 5.1.1 no such user\r\n" },
      { "^RSET", "250 2.0.0 ok\r\n" },
      { "^QUIT", "221 2.0.0 bye\r\n", close = true },
    } }
    local res, _, info = smtp.send(send_opts(srv.port))
    assert.is_nil(res)
    assert.equal("recipients", info.kind)
    assert.equal("127.0.0.1", info.session.address)
    assert.is_true(info.session.capabilities.PIPELINING)
    check_timings(info.session.timings, { "connect", "transaction" })
  end)

  it("a greeting refused: the report knows the address, not the capabilities", function()
    local srv = servers.fake{ timeout = 10, steps = { { send = "554 5.3.2 go away\r\n" },
      { expect = "^QUIT" }, { send = "221 bye\r\n" } } }
    local res, _, info = smtp.send(send_opts(srv.port))
    assert.is_nil(res)
    assert.equal("greeting", info.kind)
    assert.equal("127.0.0.1", info.session.address)
    check_timings(info.session.timings, { "connect" })
  end)

  it("send_many: each result has its own transaction's timings", function()
    local srv = servers.fake{ timeout = 10, steps = plain_steps{
      { "^MAIL ", "250 2.1.0 ok\r\n" },
      { "^RCPT TO:<" .. TO2:gsub("%p", "%%%0") .. ">", "550 5.1.1 no such user\r\n" },
      { "^RCPT ", "250 2.1.5 ok\r\n" },
      { "^DATA", "354 go\r\n", data = "250 2.0.0 queued\r\n" },
      { "^RSET", "250 2.0.0 ok\r\n" },
      { "^QUIT", "221 2.0.0 bye\r\n", close = true },
    } }
    local s = assert(smtp.connect{ host = "127.0.0.1", port = srv.port, helo = HELO, timeout = 5,
                                   tls = "none" })
    local results = s:send_many({ msg{ subject = "1" }, msg{ subject = "2", to = TO2 }, msg{ subject = "3" } })
    s:quit()
    assert.equal(3, #results)
    assert.is_nil(results[1].error)
    assert.equal("recipients", results[2].info.kind)
    assert.is_nil(results[3].error)
    local reports = { results[1].session, results[2].info.session, results[3].session }
    local last_total = 0
    for i, r in ipairs(reports) do
      assert.is_table(r, "no report for message " .. i)
      check_timings(r.timings, { "connect", "transaction" })
      assert.is_true(r.timings.total + EPS >= last_total, "totals go back in time")
      last_total = r.timings.total
      -- one session: the same setup timing, separate tables
      assert.equal(reports[1].timings.connect, r.timings.connect)
      if i > 1 then assert.are_not.equal(reports[1].timings, r.timings) end
    end
    -- a session's own send, and one refused before it was sent
    local srv2 = servers.fake{ timeout = 10, steps = plain_steps() }
    local s2 = assert(smtp.connect{ host = "127.0.0.1", port = srv2.port, helo = HELO, timeout = 5,
                                    tls = "none" })
    local res = assert(s2:send(msg()))
    check_timings(res.session.timings, { "connect", "transaction" })
    local bad, _, binfo = s2:sendmail(FROM, TO, "Subject: x\r\n\r\n" .. string.rep("x", 1000) .. "\r\n")
    local bad2, _, binfo2 = s2:send{ from = FROM }
    s2:quit()
    assert.is_nil(bad)
    assert.equal("argument", binfo.kind)
    assert.equal(srv2.port, binfo.session.port)
    assert.is_nil(bad2)
    assert.equal(srv2.port, binfo2.session.port)
  end)

  it("LMTP: protocol is lmtp", function()
    local srv = servers.fake{ timeout = 10, steps = {
      GREET, { expect = "^LHLO " }, { send = "250-fake.test\r\n250 PIPELINING\r\n" },
      { serve = {
        { "^MAIL ", "250 2.1.0 ok\r\n" },
        { "^RCPT ", "250 2.1.5 ok\r\n" },
        { "^DATA", "354 go\r\n", data = "250 2.0.0 delivered\r\n" },
        { "^QUIT", "221 2.0.0 bye\r\n", close = true },
      } },
    } }
    local res, err = smtp.send(send_opts(srv.port, { protocol = "lmtp" }))
    assert.is_table(res, err)
    assert.equal("lmtp", res.session.protocol)
    assert.equal(srv.port, res.session.port)
  end)

  it("a Unix socket: address is the path, no port #lmtp #dovecot", function()
    if not lmtp.available() then
      pending("dovecot-lmtpd is not installed (or not root)")
      return
    end
    local dv = lmtp.start{}
    local res, err = smtp.send{ path = dv.path, protocol = "lmtp", tls = "none", helo = HELO,
      timeout = 10, from = FROM, to = "good1@example.test", subject = "unix", text = "x\n" }
    dv:stop()
    assert.is_table(res, err)
    assert.equal(dv.path, res.session.address)
    assert.is_nil(res.session.port)
    assert.equal("lmtp", res.session.protocol)
  end)

  describe("TLS #tls", function()
    local function need()
      local why = certs.missing(true)
      if why then
        pending(why .. " (the fake server needs LuaSec and openssl for TLS)")
        return false
      end
      shared_certs()
      return true
    end

    local function tls_server()
      return servers.fake{ timeout = 10, tls = { cert = C.good, key = C.good_key }, steps = {
        GREET, { expect = "^EHLO " }, { send = "250-fake.test\r\n250 STARTTLS\r\n" },
        { expect = "^STARTTLS" }, { send = "220 2.0.0 go ahead\r\n" }, { starttls = true },
        { expect = "^EHLO " }, { send = CAPS },
        { serve = {
          { "^MAIL ", "250 2.1.0 ok\r\n" },
          { "^RCPT ", "250 2.1.5 ok\r\n" },
          { "^DATA", "354 go\r\n", data = "250 2.0.0 queued\r\n" },
          { "^QUIT", "221 2.0.0 bye\r\n", close = true },
        } },
      } }
    end

    local function check_peer(peer)
      assert.is_table(peer)
      assert.equal("CN=localhost", peer.subject)
      assert.equal("CN=lua-smtp Test CA", peer.issuer)
      assert.same({ "DNS:localhost", "IP:127.0.0.1" }, peer.san)
      assert.equal(not_after_of(C.good), peer.not_after)
    end

    it("STARTTLS verified: version, cipher, the certificate's details", function()
      if not need() then return end
      local srv = tls_server()
      local res, err = smtp.send(send_opts(srv.port, { host = "localhost", tls = "starttls", cafile = C.ca }))
      assert.is_table(res, err)
      local t = res.session.tls
      assert.is_table(t)
      assert.matches("^TLSv1%.[23]$", t.version)
      assert.is_string(t.cipher)
      assert.is_true(#t.cipher > 0)
      assert.is_true(t.verified)
      check_peer(t.peer)
      check_timings(res.session.timings, { "connect", "tls", "transaction" })
      -- the capabilities after TLS
      assert.is_nil(res.session.capabilities.STARTTLS)
      assert.is_true(res.session.capabilities.PIPELINING)
    end)

    it("verify = false: verified is false, the certificate is still described", function()
      if not need() then return end
      local srv = tls_server()
      local res, err = smtp.send(send_opts(srv.port, { tls = "starttls", verify = false }))
      assert.is_table(res, err)
      assert.is_false(res.session.tls.verified)
      check_peer(res.session.tls.peer)
    end)

    it("a failed certificate check: the report knows the connection, no tls", function()
      if not need() then return end
      local srv = tls_server()
      local res, _, info = smtp.send(send_opts(srv.port, { tls = "starttls", cafile = C.other_ca }))
      assert.is_nil(res)
      assert.equal("tls", info.kind)
      assert.equal("127.0.0.1", info.session.address)
      assert.is_nil(info.session.tls)
      check_timings(info.session.timings, { "connect" })
    end)
  end)

  describe("against Postfix #postfix #tls #auth", function()
    it("STARTTLS verified and AUTH: the mechanism, never the credentials", function()
      if not postfix.available() or not certs.available() then
        pending("postfix / dovecot-core are not installed (or not root)")
        return
      end
      local pf = postfix.start{ users = { { "alice", "s3cr3t-pw" } }, certs_dir = shared_certs().dir }
      local res, err = smtp.send{ host = "localhost", port = pf.ports.submission, helo = HELO,
        timeout = 10, tls = "starttls", cafile = C.ca, user = "alice", password = "s3cr3t-pw",
        auth = "PLAIN", from = FROM, to = TO, subject = "pf report", text = "x\n" }
      pf:stop()
      assert.is_table(res, err)
      local s = res.session
      assert.equal("PLAIN", s.auth)
      assert.is_true(s.tls.verified)
      assert.matches("^TLSv1%.[23]$", s.tls.version)
      assert.equal("CN=localhost", s.tls.peer.subject)
      assert.same({ "DNS:localhost", "IP:127.0.0.1" }, s.tls.peer.san)
      assert.truthy(s.capabilities.AUTH)
      check_timings(s.timings, { "connect", "tls", "auth", "transaction" })
      local text = json.encode(s)
      assert.is_nil(text:find("s3cr3t", 1, true))
      assert.is_nil(text:find("alice", 1, true))
    end)
  end)

  describe("core.tls_cert_info", function()
    it("reads subject, issuer, not_after and the SANs of a DER certificate", function()
      if not certs.available() then pending("openssl is not installed") return end
      shared_certs()
      local info = core.tls_cert_info(der_of(C.good))
      assert.equal("CN=localhost", info.subject)
      assert.equal("CN=lua-smtp Test CA", info.issuer)
      assert.equal(not_after_of(C.good), info.not_after)
      assert.same({ "DNS:localhost", "IP:127.0.0.1" }, info.san)
      local wrong = core.tls_cert_info(der_of(C.wronghost))
      assert.same({ "DNS:wrong.example" }, wrong.san)
      local client = core.tls_cert_info(der_of(C.client))
      assert.equal("CN=lua-smtp test client", client.subject)
      assert.same({}, client.san)
    end)

    it("refuses what is not exactly one certificate", function()
      local ok, code = core.tls_cert_info("not a certificate")
      assert.is_nil(ok)
      assert.equal("tls", code)
      if certs.available() then
        shared_certs()
        local der = der_of(C.good)
        assert.is_nil(core.tls_cert_info(der .. "x"))
        assert.is_nil(core.tls_cert_info(der:sub(1, -2)))
      end
    end)
  end)

  describe("smtp-send's JSON encoder", function()
    it("escapes quotes, backslashes and control characters, keeps UTF-8", function()
      assert.equal([["a\"b\\c\n\r\t\b\f\u0000\u001f\u007f"]], json.encode("a\"b\\c\n\r\t\b\f\0\31\127"))
      assert.equal('"h\195\169 \226\130\172 \240\159\152\128"', json.encode("h\195\169 \226\130\172 \240\159\152\128"))
    end)

    it("replaces octets that are not UTF-8 by U+FFFD", function()
      assert.equal('"a\\ufffdb\\ufffd\\ufffd"', json.encode("a\255b\192\175"))     -- overlong "/"
      assert.equal('"\\ufffd\\ufffd\\ufffd"', json.encode("\237\160\128"))          -- a surrogate
      assert.equal('"x\\ufffd\\ufffd"', json.encode("x\226\130"))                  -- cut short: each octet
    end)

    it("arrays, sorted objects, numbers, null", function()
      assert.equal('{"a":[1,2.5,"x"],"b":{},"c":true,"d":null}',
        json.encode({ c = true, a = { 1, 2.5, "x" }, b = {}, d = 0 / 0 }))
      assert.equal('{"accepted":[],"refused":{}}', json.encode({ accepted = {}, refused = {} },
        { arrays = { accepted = true } }))
      local t = {}
      t.self = t
      assert.has_error(function() json.encode(t) end)
    end)

    it("what python3's json module reads back", function()
      if not os.execute("command -v python3 >/dev/null 2>&1") then pending("no python3") return end
      local v = { s = "q\"\\\0\1\127\255é\226\128\168", n = 3, f = 0.1, l = { true, false } }
      local path = tmpdir() .. "/enc.json"
      local f = assert(io.open(path, "wb"))
      f:write(json.encode(v), "\n")
      f:close()
      local p = io.popen("python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); " ..
        "print(ascii(v[\"s\"]), v[\"n\"], v[\"f\"], v[\"l\"])' " .. q(path))
      local out = p:read("*a")
      p:close()
      assert.equal("'q\"\\\\\\x00\\x01\\x7f\\ufffd\\xe9\\u2028' 3 0.1 [True, False]\n", out)
    end)
  end)

  describe("smtp-send -v and --json", function()
    local LUA = os.getenv("LUA_SERVER") or "lua5.4"

    local function run(args)
      local dir = tmpdir()
      local words = {}
      for i, a in ipairs(args) do words[i] = q(a) end
      local cmd = "env -u SMTP_PASSWORD -u SMTP_SERVER HOME=" .. q(dir) .. " XDG_CONFIG_HOME=" ..
        q(dir .. "/.config") .. " " .. LUA .. " " .. q(servers.root .. "/bin/smtp-send") .. " " ..
        table.concat(words, " ") .. " </dev/null >" .. q(dir .. "/out") .. " 2>" .. q(dir .. "/err")
      local a, _, c = os.execute(cmd)
      local code = type(a) == "number" and (a > 255 and math.floor(a / 256) or a) or c
      return code, read_file(dir .. "/out") or "", read_file(dir .. "/err") or ""
    end

    local function decode(line)
      local path = tmpdir() .. "/line.json"
      local f = assert(io.open(path, "wb"))
      f:write(line)
      f:close()
      -- python3 checks it is JSON and hands back the fields as Lua code
      local p = io.popen("python3 -c 'import json,sys\n" ..
        "v=json.load(open(sys.argv[1]))\n" ..
        "s=(v.get(\"session\") or v[\"info\"][\"session\"])\n" ..
        "t=s[\"timings\"]\n" ..
        "print(\"return {ok=%s,host=%r,address=%r,port=%r,protocol=%r,connect=%r,total=%r,\"" ..
        " \"transaction=%r,accepted=%d,kind=%r}\" % " ..
        "(str(v[\"ok\"]).lower(), s[\"host\"], s.get(\"address\") or \"\", s[\"port\"], s[\"protocol\"]," ..
        " t.get(\"connect\", -1), t[\"total\"], t.get(\"transaction\", -1), len(v.get(\"accepted\", [])), " ..
        "v.get(\"info\", {}).get(\"kind\", \"\")))' " .. q(path) .. " 2>&1")
      local out = p:read("*a")
      p:close()
      local chunk = assert((rawget(_G, "loadstring") or load)(out:gsub("'", '"')), out)
      return chunk()
    end

    local COMPOSE = { "--from", FROM, "--to", TO, "--subject", "s", "--body", "hello", "--tls", "none",
                      "--helo", HELO }

    local function args(port, extra)
      local a = { "--server", "127.0.0.1:" .. port }
      for _, w in ipairs(COMPOSE) do a[#a + 1] = w end
      for _, w in ipairs(extra) do a[#a + 1] = w end
      return a
    end

    it("-v: the report after the transcript, on stderr", function()
      local srv = servers.fake{ timeout = 10, steps = plain_steps() }
      local code, out, err = run(args(srv.port, { "-v" }))
      assert.equal(0, code, err)
      assert.equal("", out)
      local at = err:find("smtp-send: session: 127.0.0.1 port " .. srv.port .. ", smtp, no TLS\n", 1, true)
      assert.is_number(at, err)
      assert.is_true(at > assert(err:find("send: 'QUIT\\r\\n'", 1, true)))
      assert.matches("smtp%-send: timings: connect %d+%.%d%d%d s, transaction %d+%.%d%d%d s," ..
        " total %d+%.%d%d%d s\n$", err)
    end)

    it("-v: a failure to connect still prints what is known, before the error", function()
      local port = servers.free_port()
      local code, _, err = run(args(port, { "-v", "--timeout", "2" }))
      assert.equal(75, code)
      assert.matches("\nsmtp%-send: session: 127%.0%.0%.1 port " .. port .. ", smtp, no TLS\n" ..
        "smtp%-send: timings: connect %d+%.%d%d%d s, total %d+%.%d%d%d s\nsmtp%-send: connect: ", err)
    end)

    it("--json: one line of JSON on stdout per message, success and failure", function()
      if not os.execute("command -v python3 >/dev/null 2>&1") then pending("no python3") return end
      local srv = servers.fake{ timeout = 10, steps = plain_steps() }
      local code, out, err = run(args(srv.port, { "--json" }))
      assert.equal(0, code, err)
      assert.matches("^{[^\n]*}\n$", out)
      local v = decode(out)
      assert.is_true(v.ok)
      assert.equal(1, v.accepted)
      assert.equal("127.0.0.1", v.host)
      assert.equal("127.0.0.1", v.address)
      assert.equal(srv.port, v.port)
      assert.equal("smtp", v.protocol)
      assert.is_true(v.connect >= 0 and v.transaction >= 0 and v.total + EPS >= v.connect + v.transaction)

      local port = servers.free_port()
      code, out = run(args(port, { "--json", "--timeout", "2" }))
      assert.equal(75, code)   -- EX_TEMPFAIL
      assert.matches("^{[^\n]*}\n$", out)
      v = decode(out)
      assert.is_false(v.ok)
      assert.equal("connect", v.kind)
      assert.equal(port, v.port)
      assert.equal("", v.address)
      assert.is_true(v.connect >= 0)
    end)
  end)
end)
