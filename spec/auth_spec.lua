-- SMTP AUTH: every mechanism against a real Postfix + Dovecot on the
-- submission port (STARTTLS required), the automatic choice, redaction of
-- the transcript, and against the scriptable fake server the cases a real
-- server will not produce on demand: AUTH refused over plaintext,
-- insecure_auth, 454, XOAUTH2, SCRAM server signatures that do not verify.
-- Tags: #auth everywhere, #postfix for the Postfix part (pending when
-- postfix / dovecot-core are missing or we are not root).
local smtp = require "smtp"
local core = require "smtp.core"
local servers = require "spec.support.servers"
local certs = require "spec.support.certs"
local util = require "spec.support.util"
local postfix = require "spec.support.postfix"

local HELO = "client.example"
local EHLO = "EHLO " .. HELO .. "\r\n"
local FROM, TO = "sender@example.org", "rcpt@example.net"
local MECHS = { "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256" }
-- The harness's users: ASCII, and UTF-8 in both name and password.
local USERS = { { "alice", "secret" }, { "bób", "pässwörd" } }

local function b64(s) return (core.b64encode(s, 0)) end

local tmp, C

local function shared_certs()
  if not C then C, tmp = certs.in_temp_dir("lua-smtp-auth") end
  return C
end

local recorder, exact = servers.recorder, servers.exact
local function find_line(lines, s) return (servers.find_line(lines, s, true)) end

-- Checks a transcript for one AUTH exchange: the AUTH line shows the
-- mechanism and at most "<redacted>"; every line the client sent until the
-- server's final reply is "<redacted>"; no secret appears anywhere, in the
-- clear or in base64. secrets: strings that must not appear.
local function assert_redacted(lines, mech, secrets)
  local start
  for i, l in ipairs(lines) do
    if l:match("^send: 'AUTH ") then start = i break end
  end
  assert.is_number(start, "no AUTH line in the transcript")
  local auth = lines[start]
  assert.is_truthy(auth == "send: 'AUTH " .. mech .. "\\r\\n'"
    or auth == "send: 'AUTH " .. mech .. " <redacted>\\r\\n'", auth)
  local i = start + 1
  while i <= #lines do
    local l = lines[i]
    local code = l:match("^reply: retcode %((%d+)%)")
    if code and code ~= "334" then break end
    if l:match("^send: ") then
      assert.equal("send: '<redacted>\\r\\n'", l)
    else
      assert.matches("^reply: ", l)   -- server challenges stay readable
    end
    i = i + 1
  end
  assert.is_true(i <= #lines, "no final reply to AUTH")
  for _, l in ipairs(lines) do
    for _, secret in ipairs(secrets) do
      assert.is_nil(l:find(secret, 1, true), "secret in the transcript: " .. l)
    end
  end
end

-- What must never show for user/password, whatever the mechanism.
local function secrets_of(user, password)
  return { password, b64(password), b64("\0" .. user .. "\0" .. password), b64(user) }
end

describe("AUTH #auth", function()
  lazy_teardown(function()
    servers.stop_all()
    postfix.stop_all()
    util.remove_tree(tmp)
  end)

  after_each(function()
    servers.stop_all()
  end)

  describe("against Postfix + Dovecot on the submission port #postfix", function()
    local pf

    local function need()
      if not postfix.available() then
        pending("postfix / dovecot-core are not installed (or not root)")
        return false
      end
      if not certs.available() then
        pending("openssl is not installed")
        return false
      end
      pf = postfix.start{ users = USERS, certs_dir = shared_certs().dir }
      return true
    end

    after_each(function()
      if pf then pf:stop() end
      pf = nil
      postfix.stop_all()
    end)

    local function opts(extra)
      local o = { host = "localhost", port = pf.ports.submission, tls = "starttls", cafile = C.ca,
                  helo = HELO, timeout = 10 }
      for k, v in pairs(extra) do o[k] = v end
      return o
    end

    it("accepts each mechanism with the right password (ASCII and UTF-8 users) and delivers", function()
      if not need() then return end
      local subjects = {}
      for _, mech in ipairs(MECHS) do
        for n, u in ipairs(USERS) do
          local lines, dbg = recorder()
          local s, err = smtp.connect(opts{ user = u[1], password = u[2], auth = mech, debug = dbg })
          assert.is_table(s, mech .. " " .. u[1] .. ": " .. tostring(err))
          assert.equal(mech, s.authenticated)
          assert.is_true(s.tls)
          local subject = "auth " .. mech .. " user " .. n   -- ASCII: not encoded
          subjects[#subjects + 1] = subject
          local res, serr = s:send{ from = FROM, to = TO, subject = subject, text = "hello\n" }
          assert.is_table(res, serr)
          s:quit()
          assert_redacted(lines, mech, secrets_of(u[1], u[2]))
          assert.truthy(find_line(lines, "reply: b'235 "))
        end
      end
      local msgs = pf:messages(#subjects)
      assert.equal(#subjects, #msgs)
      local seen = {}
      for _, m in ipairs(msgs) do
        seen[("\n" .. m.content):match("\nSubject: ([^\n]*)\n")] = true
        assert.equal(FROM, m.sender)
        assert.equal(TO, m.recipient)
      end
      for _, subject in ipairs(subjects) do
        assert.is_true(seen[subject], subject)
      end
    end)

    it("rejects each mechanism with a wrong password: kind auth, 535, not temporary", function()
      if not need() then return end
      for _, mech in ipairs(MECHS) do
        local lines, dbg = recorder()
        local s, err, info = smtp.connect(opts{ user = "alice", password = "wrong-pw", auth = mech,
                                                debug = dbg })
        assert.is_nil(s, mech)
        assert.equal("auth", info.kind, mech)
        assert.equal("auth", info.stage)
        assert.equal(535, info.code, mech)
        assert.equal("5.7.8", info.enhanced)
        assert.is_false(info.temporary)
        assert.matches("^auth: authentication failed: 535 5%.7%.8 ", err)
        assert.is_nil(err:find("wrong-pw", 1, true))
        assert_redacted(lines, mech, secrets_of("alice", "wrong-pw"))
        -- the session was ended politely
        assert.truthy(find_line(lines, "send: 'QUIT\\r\\n'"))
      end
      assert.same({}, pf:messages(0))
    end)

    it("picks SCRAM-SHA-256 by itself; auth = \"PLAIN\" forces PLAIN", function()
      if not need() then return end
      local lines, dbg = recorder()
      local s, err = smtp.connect(opts{ user = "alice", password = "secret", debug = dbg })
      assert.is_table(s, err)
      assert.equal("SCRAM-SHA-256", s.authenticated)
      s:quit()
      assert.truthy(find_line(lines, "send: 'AUTH SCRAM-SHA-256 <redacted>\\r\\n'"))
      assert_redacted(lines, "SCRAM-SHA-256", secrets_of("alice", "secret"))

      lines, dbg = recorder()
      s, err = smtp.connect(opts{ user = "alice", password = "secret", auth = "PLAIN", debug = dbg })
      assert.is_table(s, err)
      assert.equal("PLAIN", s.authenticated)
      s:quit()
      assert.truthy(find_line(lines, "send: 'AUTH PLAIN <redacted>\\r\\n'"))
      assert.is_nil(find_line(lines, "SCRAM-SHA-256 <redacted>"))

      -- smtp.send authenticates the same way and the message arrives
      local res, serr = smtp.send(opts{ user = "bób", password = "pässwörd", from = FROM, to = TO,
                                       subject = "send with auth", text = "x\n" })
      assert.is_table(res, serr)
      local msgs = pf:messages(1)
      assert.matches("Subject: send with auth\n", msgs[1].content, 1, true)
    end)

    it("refuses relaying without AUTH on the submission port (the AUTH above is what allows it)", function()
      if not need() then return end
      local res, err, info = smtp.send(opts{ from = FROM, to = TO, subject = "no auth", text = "x\n" })
      assert.is_nil(res)
      assert.is_truthy(info.kind == "sender" or info.kind == "recipients", err)
      assert.same({}, pf:messages(0))
    end)
  end)

  describe("against the fake server", function()
    local GREET = { send = "220 fake.test ESMTP\r\n" }

    local function ehlo(caps)
      return { { expect = exact("EHLO " .. HELO) }, { send = "250-fake.test\r\n250 AUTH " .. caps .. "\r\n" } }
    end

    local QUIT = { { expect = "^QUIT$" }, { send = "221 2.0.0 bye\r\n" } }

    local function script(...)
      local out = { GREET }
      for _, list in ipairs({ ... }) do
        for _, st in ipairs(list) do out[#out + 1] = st end
      end
      return { steps = out }
    end

    local function opts(port, extra)
      local o = { host = "localhost", port = port, helo = HELO, timeout = 5 }
      for k, v in pairs(extra) do o[k] = v end
      return o
    end

    -- The lines the client sent from AUTH on, as the server recorded them.
    local function auth_lines(rec)
      local out = {}
      local from = rec:find("AUTH ", 1, true)
      for line in rec:sub(from or #rec + 1):gmatch("([^\r\n]+)\r\n") do
        if line ~= "QUIT" then out[#out + 1] = line end
      end
      return out
    end

    -- Nothing of what the client sent after "AUTH <mech>" shows in the
    -- transcript (the exact bytes, as the server recorded them).
    local function assert_wire_redacted(lines, rec, mech)
      local sent = auth_lines(rec)
      assert.is_true(#sent >= 1)
      for n, wire in ipairs(sent) do
        local secret = n == 1 and wire:match("^AUTH %S+ (%S+)$") or (n > 1 and wire)
        if secret and secret ~= "*" and #secret >= 4 then
          for _, l in ipairs(lines) do
            assert.is_nil(l:find(secret, 1, true), mech .. ": sent line in the transcript: " .. l)
          end
        end
      end
    end

    it("does not send AUTH over plaintext (tls = none): kind auth, no AUTH on the wire", function()
      local srv = servers.fake(script(ehlo("PLAIN LOGIN"), QUIT))
      local s, err, info = smtp.connect(opts(srv.port, { tls = "none", user = "alice", password = "secret" }))
      assert.is_nil(s)
      assert.equal("auth", info.kind)
      assert.equal("auth", info.stage)
      assert.is_false(info.temporary)
      assert.matches("unencrypted", err, 1, true)
      assert.is_true(srv:wait(5))
      assert.equal(EHLO .. "QUIT\r\n", srv:received())
      assert.is_nil(srv:received():find("AUTH", 1, true))
    end)

    it("insecure_auth = true allows it: AUTH PLAIN with the exact initial response", function()
      local srv = servers.fake(script(ehlo("PLAIN LOGIN"),
        { { expect = exact("AUTH PLAIN " .. b64("\0alice\0secret")) }, { send = "235 2.7.0 ok\r\n" } }, QUIT))
      local lines, dbg = recorder()
      local s, err = smtp.connect(opts(srv.port, { tls = "none", user = "alice", password = "secret",
                                                  insecure_auth = true, debug = dbg }))
      assert.is_table(s, err)
      assert.equal("PLAIN", s.authenticated)
      s:quit()
      assert.is_true(srv:wait(5))
      assert.equal(EHLO .. "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nQUIT\r\n", srv:received())
      assert_redacted(lines, "PLAIN", secrets_of("alice", "secret"))
    end)

    it("454 from the server: kind auth, temporary", function()
      local srv = servers.fake(script(ehlo("PLAIN"),
        { { expect = "^AUTH PLAIN " }, { send = "454 4.7.0 Temporary authentication failure\r\n" } }, QUIT))
      local s, err, info = smtp.connect(opts(srv.port, { tls = "none", user = "alice", password = "secret",
                                                        insecure_auth = true }))
      assert.is_nil(s)
      assert.equal("auth", info.kind)
      assert.equal(454, info.code)
      assert.is_true(info.temporary)
      assert.equal("auth: authentication failed: 454 4.7.0 Temporary authentication failure", err)
    end)

    it("XOAUTH2 with a token: the exact initial response", function()
      local ir = b64("user=alice\1auth=Bearer TOKEN\1\1")
      assert.equal("dXNlcj1hbGljZQFhdXRoPUJlYXJlciBUT0tFTgEB", ir)
      local srv = servers.fake(script(ehlo("PLAIN LOGIN XOAUTH2"),
        { { expect = exact("AUTH XOAUTH2 " .. ir) }, { send = "235 2.7.0 ok\r\n" } }, QUIT))
      local lines, dbg = recorder()
      local s, err = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true, user = "alice",
                                                  token = "TOKEN", debug = dbg }))
      assert.is_table(s, err)
      assert.equal("XOAUTH2", s.authenticated)
      s:quit()
      assert.is_true(srv:wait(5))
      assert.equal(EHLO .. "AUTH XOAUTH2 " .. ir .. "\r\nQUIT\r\n", srv:received())
      assert_redacted(lines, "XOAUTH2", { "TOKEN", ir })
    end)

    -- Redaction checked against the exact bytes on the wire, for every
    -- mechanism (the SCRAM exchange is in the signature cases below).
    it("redacts every line the client sends after AUTH (PLAIN, LOGIN, CRAM-MD5)", function()
      local exchanges = {
        PLAIN = { { expect = "^AUTH PLAIN %S+$" }, { send = "235 2.7.0 ok\r\n" } },
        LOGIN = { { expect = "^AUTH LOGIN$" }, { send = "334 VXNlcm5hbWU6\r\n" }, { expect = "." },
                  { send = "334 UGFzc3dvcmQ6\r\n" }, { expect = "." }, { send = "235 2.7.0 ok\r\n" } },
        ["CRAM-MD5"] = { { expect = "^AUTH CRAM%-MD5$" },
                         { send = "334 " .. b64("<1896.697170952@fake.test>") .. "\r\n" },
                         { expect = "." }, { send = "235 2.7.0 ok\r\n" } },
      }
      for _, mech in ipairs({ "PLAIN", "LOGIN", "CRAM-MD5" }) do
        local srv = servers.fake(script(ehlo(mech), exchanges[mech], QUIT))
        local lines, dbg = recorder()
        local s, err = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true, user = "alice",
                                                    password = "secret", debug = dbg }))
        assert.is_table(s, err)
        assert.equal(mech, s.authenticated)
        s:quit()
        assert.is_true(srv:wait(5))
        assert_redacted(lines, mech, secrets_of("alice", "secret"))
        assert_wire_redacted(lines, srv:received(), mech)
        if mech == "LOGIN" then
          -- the challenges stay in the transcript
          assert.truthy(find_line(lines, "reply: b'334 VXNlcm5hbWU6\\r\\n'"))
          assert.equal(EHLO .. "AUTH LOGIN\r\n" .. b64("alice") .. "\r\n" .. b64("secret") .. "\r\nQUIT\r\n",
            srv:received())
        end
        srv:stop()
      end
    end)

    describe("SCRAM-SHA-256 server signature", function()
      -- The server-first message must extend the client's random nonce: the
      -- script reads the AUTH line from the record file (arg[2] of the
      -- fake server) and answers with that nonce, a salt and 4096 rounds.
      local SERVER_FIRST = [[
local mime = require "mime"
local f = io.open(arg[2], "rb"); local rec = f:read("*a"); f:close()
local first = mime.unb64(rec:match("AUTH SCRAM%-SHA%-256 (%S+)\r\n"))
local cnonce = first:match(",r=([^,]+)")
return "334 " .. mime.b64("r=" .. cnonce .. "srvNONCE,s=" .. mime.b64("saltsalt") .. ",i=4096") .. "\r\n"
]]
      local WRONG = b64("v=" .. b64(string.rep("\0", 32)))

      local function run(tail)
        local srv = servers.fake(script(ehlo("SCRAM-SHA-256"),
          { { expect = "^AUTH SCRAM%-SHA%-256 %S+$" }, { sendfn = SERVER_FIRST },
            { expect = "^[%w+/=]+$" } }, tail))
        local lines, dbg = recorder()
        local s, err, info = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true,
          user = "alice", password = "secret", debug = dbg }))
        assert.is_nil(s)
        assert.is_true(srv:wait(5))
        local rec = srv:received()
        -- the client-final message carries the proof: "c=biws,r=<nonce>,p=<proof>"
        local final = core.b64decode(auth_lines(rec)[2])
        assert.matches("^c=biws,r=[^,]+srvNONCE,p=[%w+/=]+$", final)
        assert_redacted(lines, "SCRAM-SHA-256", secrets_of("alice", "secret"))
        assert_wire_redacted(lines, rec, "SCRAM-SHA-256")
        assert.is_nil(find_line(lines, final:match("p=([%w+/=]+)")))
        return err, info, rec
      end

      it("wrong signature in a 334: kind auth, the server did not prove it knows the password", function()
        local err, info, rec = run({ { send = "334 " .. WRONG .. "\r\n" }, { expect = "^%*$" },
                                     { send = "501 5.7.0 Authentication aborted\r\n" }, QUIT[1], QUIT[2] })
        assert.equal("auth", info.kind)
        assert.equal("auth", info.stage)
        assert.is_false(info.temporary)
        assert.equal(501, info.code)
        assert.equal("auth: authentication failed: the server did not prove that it knows the password" ..
          " (SCRAM server signature wrong)", err)
        -- the exchange was cancelled with "*" (RFC 4954 4), then QUIT
        assert.matches("\r\n%*\r\nQUIT\r\n$", rec)
      end)

      it("wrong signature in the 235: kind auth, the server did not prove it knows the password", function()
        local err, info = run({ { send = "235 2.7.0 " .. WRONG .. "\r\n" } })
        assert.equal("auth", info.kind)
        assert.is_false(info.temporary)
        assert.matches("the server did not prove that it knows the password", err, 1, true)
      end)

      it("no signature at all before 235: kind auth", function()
        local err, info = run({ { send = "235 2.7.0 Authentication successful\r\n" } })
        assert.equal("auth", info.kind)
        assert.is_false(info.temporary)
        assert.matches("the server did not prove that it knows the password", err, 1, true)
      end)
    end)

    describe("OAUTHBEARER (RFC 7628) and refreshed tokens", function()
      local function bearer(user, tok) return b64("n,a=" .. user .. ",\1auth=Bearer " .. tok .. "\1\1") end
      local REPORT = '{"status":"invalid_token","scope":"https://mail.example/","openid-configuration":"x"}'

      it("a token picks OAUTHBEARER over XOAUTH2 and sends RFC 7628's message", function()
        local srv = servers.fake(script(ehlo("XOAUTH2 OAUTHBEARER PLAIN"),
          { { expect = exact("AUTH OAUTHBEARER " .. bearer("ann@example.org", "tok1")) },
            { send = "235 2.7.0 ok\r\n" } }, QUIT))
        local s, err = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true,
                                                     user = "ann@example.org", token = "tok1" }))
        assert.is_table(s, err)
        assert.equal("OAUTHBEARER", s.authenticated)
        s:quit()
        assert.is_true(srv:wait(5))
        assert.equal("", srv:errors())
        srv:stop()
      end)

      it("a refused token is refreshed once; the report is kept out of the transcript", function()
        local calls, seen = 0, nil
        local function token(report)
          calls = calls + 1
          seen = report
          return calls == 1 and "old" or "new"
        end
        local srv = servers.fake(script(ehlo("OAUTHBEARER"),
          { { expect = exact("AUTH OAUTHBEARER " .. bearer("ann", "old")) },
            { send = "334 " .. b64(REPORT) .. "\r\n" }, { expect = exact("AQ==") },
            { send = "535 5.7.8 token rejected\r\n" },
            { expect = exact("AUTH OAUTHBEARER " .. bearer("ann", "new")) }, { send = "235 2.7.0 ok\r\n" } },
          QUIT))
        local lines, dbg = recorder()
        local s, err = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true, user = "ann",
                                                     token = token, debug = dbg }))
        assert.is_table(s, err)
        s:quit()
        assert.equal(2, calls)
        assert.equal("invalid_token", seen.status)
        assert.equal("https://mail.example/", seen.scope)
        assert.is_nil(find_line(lines, "invalid_token"))
        assert.is_nil(find_line(lines, b64(REPORT)))
        assert.is_nil(find_line(lines, "old"))
        assert.is_true(srv:wait(5))
        assert.equal("", srv:errors())
        srv:stop()
      end)

      it("when the server closes on the refused token, the fresh one goes over a new connection", function()
        local calls = 0
        local function lit(x) return (x:gsub("%p", "%%%0")) end
        local steps = script(ehlo("OAUTHBEARER")).steps
        steps[#steps + 1] = { serve = {
          { "^AUTH OAUTHBEARER " .. lit(bearer("ann", "old")) .. "$", "334 " .. b64(REPORT) .. "\r\n" },
          { "^AQ==$", "535 5.7.8 rejected, bye\r\n", close = true },
          { "^AUTH OAUTHBEARER " .. lit(bearer("ann", "new")) .. "$", "235 2.7.0 ok\r\n" },
          { "^QUIT$", "221 2.0.0 bye\r\n", close = true },
        } }
        local srv = servers.fake{ steps = steps, connections = 2, timeout = 10 }
        local s, err = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true, user = "ann",
          token = function() calls = calls + 1 return calls == 1 and "old" or "new" end }))
        assert.is_table(s, err)
        assert.equal("OAUTHBEARER", s.authenticated)
        s:quit()
        assert.equal(2, calls)
        assert.is_true(srv:wait(5))
        assert.equal("", srv:errors())
        local _, auths = srv:received():gsub("AUTH OAUTHBEARER", "")
        assert.equal(2, auths)
        srv:stop()
      end)

      it("refused again: auth failure with the report in info, no third try", function()
        local calls = 0
        local srv = servers.fake(script(ehlo("XOAUTH2"),
          { { expect = "^AUTH XOAUTH2 " }, { send = "334 " .. b64('{"status":"401","schemes":"bearer"}') .. "\r\n" },
            { expect = "^$" }, { send = "535 5.7.8 no\r\n" },
            { expect = "^AUTH XOAUTH2 " }, { send = "334 " .. b64('{"status":"401","schemes":"bearer"}') .. "\r\n" },
            { expect = "^$" }, { send = "535 5.7.8 still no\r\n" } }, QUIT))
        local s, err, info = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true, user = "ann",
          token = function() calls = calls + 1 return "t" .. calls end }))
        assert.is_nil(s)
        assert.equal(2, calls)
        assert.equal("auth", info.kind, err)
        assert.equal("401", info.oauth.status)
        assert.equal("bearer", info.oauth.schemes)
        assert.is_true(srv:wait(5))
        assert.equal("", srv:errors())
        srv:stop()
      end)

      it("a token function that fails is an argument failure before AUTH", function()
        local srv = servers.fake(script(ehlo("OAUTHBEARER"), QUIT))
        local s, err, info = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true, user = "ann",
          token = function() error("vault unreachable") end }))
        assert.is_nil(s)
        assert.equal("argument", info.kind)
        assert.matches("the token function failed: .*vault unreachable", err)
        srv:stop()
      end)
    end)

    it("SCRAM with fewer than 4096 iterations (RFC 7677): cancelled, no proof sent", function()
      local LOW = [[
local mime = require "mime"
local f = io.open(arg[2], "rb"); local rec = f:read("*a"); f:close()
local first = mime.unb64(rec:match("AUTH SCRAM%-SHA%-256 (%S+)\r\n"))
local cnonce = first:match(",r=([^,]+)")
return "334 " .. mime.b64("r=" .. cnonce .. "srvNONCE,s=" .. mime.b64("saltsalt") .. ",i=1") .. "\r\n"
]]
      local srv = servers.fake(script(ehlo("SCRAM-SHA-256"),
        { { expect = "^AUTH SCRAM%-SHA%-256 %S+$" }, { sendfn = LOW }, { expect = "^%*$" },
          { send = "501 5.7.0 Authentication aborted\r\n" } }, QUIT))
      local s, err, info = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true,
        user = "alice", password = "secret" }))
      assert.is_nil(s)
      assert.is_true(srv:wait(5))
      assert.equal("auth", info.kind)
      assert.is_false(info.temporary)
      assert.matches("asks for 1 SCRAM iterations; at least 4096", err, 1, true)
      assert.is_nil(srv:received():find("c=biws", 1, true))
      assert.equal(1, #auth_lines(srv:received()) - 1, "only the AUTH line and '*' were sent")
      srv:stop()
    end)

    it("a challenge the mechanism cannot answer: the message says so (not just a code)", function()
      local srv = servers.fake(script(ehlo("PLAIN"),
        { { expect = "^AUTH PLAIN %S+$" }, { send = "334 " .. b64("unexpected") .. "\r\n" },
          { expect = "^%*$" }, { send = "501 5.7.0 Authentication aborted\r\n" } }, QUIT))
      local s, err, info = smtp.connect(opts(srv.port, { tls = "none", insecure_auth = true,
        user = "alice", password = "secret" }))
      assert.is_nil(s)
      assert.equal("auth", info.kind)
      assert.equal(501, info.code)
      assert.equal("auth: authentication failed: bad challenge from the server: protocol error", err)
    end)
  end)
end)
