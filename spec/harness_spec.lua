-- Specs for the TLS / Postfix test harness itself:
--   spec/support/certs.lua        throw-away PKI made with openssl
--   spec/support/postfix.lua      private Postfix + Dovecot (SASL)
--   spec/support/fake_server.lua  starttls / implicit_tls steps (LuaSec)
-- Tags: #tls (certificates, fake server over TLS) and #postfix (needs the
-- postfix and dovecot-core packages; pending when they are missing).
-- Clients here are LuaSocket, LuaSec and the openssl command line.

local socket = require "socket"
local servers = require "spec.support.servers"
local certs = require "spec.support.certs"
local util = require "spec.support.util"
local postfix = require "spec.support.postfix"

local have_ssl, ssl = pcall(require, "ssl")
local have_mime, mime = pcall(require, "mime")

local sh_quote, run = util.shell_quote, util.run

local connect, reply = util.connect, util.read_reply

local function cmd(c, line)
  assert(c:send(line .. "\r\n"))
  return reply(c)
end

-- EHLO keywords as a set
local function ehlo(c, name)
  local code, lines = cmd(c, "EHLO " .. (name or "client.example"))
  assert.equal(250, code)
  local caps = {}
  for i = 2, #lines do caps[lines[i]:sub(5)] = true end
  return caps
end

-- TLS client handshake over a connected LuaSocket socket
local function tls_wrap(c, cafile)
  local t = assert(ssl.wrap(c, {
    mode = "client", protocol = "any", options = { "all" },
    verify = "peer", cafile = cafile,
  }))
  t:sni("localhost")
  t:settimeout(5)
  local ok, err = t:dohandshake()
  if not ok then
    t:close()
    return nil, err
  end
  return t
end

local function b64(s)
  return (mime.b64(s))
end

local wait_for = util.wait_for

-- zombies whose parent is PID 1: { pid =, comm = }
local function orphan_zombies()
  local out = {}
  local _, ps = run("ps -eo pid=,ppid=,stat=,comm=")
  for pid, ppid, stat, comm in ps:gmatch("(%d+)%s+(%d+)%s+(%S+)%s+([^\n]*)") do
    if ppid == "1" and stat:match("^Z") then
      out[#out + 1] = { pid = tonumber(pid), comm = comm:gsub("%s+$", "") }
    end
  end
  return out
end

local tmp      -- temp dir of this file
local C        -- certs.make(tmp .. "/certs")

local function shared_certs()
  if not C then C, tmp = certs.in_temp_dir("lua-smtp-harness") end
  return C
end

describe("test harness", function()
  lazy_teardown(function()
    servers.stop_all()
    postfix.stop_all()
    util.remove_tree(tmp)
  end)

  describe("certs #tls", function()
    local function need()
      if not certs.available() then
        pending("openssl is not installed")
        return false
      end
      shared_certs()
      return true
    end

    local function verify(cafile, crt)
      return run("openssl verify -CAfile " .. sh_quote(cafile) .. " " .. sh_quote(crt))
    end

    it("makes a CA and certificates that verify against it", function()
      if not need() then return end
      for _, k in ipairs({ "good", "wronghost", "client" }) do
        local ok, out = verify(C.ca, C[k])
        assert.is_true(ok, k .. ": " .. out)
      end
      for k, path in pairs(C) do
        assert.equal("/", path:sub(1, 1), k)
      end
    end)

    it("has the expected names, an expired, a self-signed and a foreign certificate", function()
      if not need() then return end
      local ok, out = run("openssl x509 -noout -ext subjectAltName -in " .. sh_quote(C.good))
      assert.is_true(ok, out)
      assert.matches("DNS:localhost", out, 1, true)
      assert.matches("IP Address:127.0.0.1", out, 1, true)
      ok, out = run("openssl x509 -noout -ext subjectAltName -in " .. sh_quote(C.wronghost))
      assert.is_true(ok, out)
      assert.matches("DNS:wrong.example", out, 1, true)
      assert.not_matches("localhost", out, 1, true)

      -- expired: signed by the CA, but not valid now
      ok = run("openssl x509 -checkend 0 -noout -in " .. sh_quote(C.expired))
      assert.is_false(ok)
      ok, out = verify(C.ca, C.expired)
      assert.is_false(ok)
      assert.matches("expired", out, 1, true)
      ok, out = run("openssl x509 -noout -startdate -enddate -in " .. sh_quote(C.expired))
      assert.is_true(ok, out)
      assert.matches("notBefore=Jan  1 00:00:00 2020 GMT", out, 1, true)
      assert.matches("notAfter=Jan  2 00:00:00 2020 GMT", out, 1, true)

      ok = verify(C.ca, C.selfsigned)
      assert.is_false(ok)
      ok = verify(C.other_ca, C.good)
      assert.is_false(ok)
      ok, out = verify(C.other_ca, C.other_ca)
      assert.is_true(ok, out)
      ok, out = run("openssl x509 -noout -ext extendedKeyUsage -in " .. sh_quote(C.client))
      assert.is_true(ok, out)
      assert.matches("Client Authentication", out, 1, true)
    end)

    it("keys match their certificates and everything is world-readable", function()
      if not need() then return end
      for _, k in ipairs({ "ca", "good", "expired", "wronghost", "selfsigned", "other_ca", "client" }) do
        local _, a = run("openssl x509 -noout -pubkey -in " .. sh_quote(C[k]))
        local _, b = run("openssl pkey -pubout -in " .. sh_quote(C[k .. "_key"]))
        assert.equal(a, b, k)
        local _, mode = run("stat -c %a " .. sh_quote(C[k]) .. " " .. sh_quote(C[k .. "_key"]))
        assert.equal("644\n644\n", mode, k)
      end
    end)

    it("reuses a complete directory", function()
      if not need() then return end
      local f = assert(io.open(C.good, "rb"))
      local before = f:read("*a")
      f:close()
      -- the unchanged certificate below proves the reuse; the time only
      -- says no key was made (seven RSA keys), with room for a loaded machine
      local t0 = socket.gettime()
      local again = certs.make(C.dir)
      assert.is_true(socket.gettime() - t0 < 3)
      assert.same(C, again)
      f = assert(io.open(C.good, "rb"))
      assert.equal(before, f:read("*a"))
      f:close()
    end)
  end)

  describe("fake server TLS #tls", function()
    local function need()
      local why = certs.missing(true)
      if why then
        pending(why)
        return false
      end
      shared_certs()
      return true
    end

    after_each(function() servers.stop_all() end)

    it("switches to TLS on a starttls step and records the plaintext inside", function()
      if not need() then return end
      local srv = servers.fake{
        tls = { cert = C.good, key = C.good_key },
        steps = {
          { send = "220 fake ESMTP\r\n" },
          { expect = "^EHLO " },
          { send = "250-fake\r\n250 STARTTLS\r\n" },
          { expect = "^STARTTLS$" },
          { send = "220 go ahead\r\n" },
          { starttls = true },
          { expect = "^EHLO " },
          { send = "250-fake over tls\r\n250 AUTH PLAIN\r\n" },
          { expect = "^QUIT$" },
          { send = "221 bye\r\n" },
        },
      }
      local c = connect(srv.port)
      assert.equal(220, (reply(c)))
      assert.is_true(ehlo(c, "one").STARTTLS)
      assert.equal(220, (cmd(c, "STARTTLS")))
      local t = assert(tls_wrap(c, C.ca))
      local caps = ehlo(t, "two")
      assert.is_true(caps["AUTH PLAIN"])
      assert.equal(221, (cmd(t, "QUIT")))
      t:close()
      assert.is_true(srv:wait(5))
      assert.equal("EHLO one\r\nSTARTTLS\r\nEHLO two\r\nQUIT\r\n", srv:received())
      assert.matches("TLS: handshake ok", srv:errors(), 1, true)
      srv:stop()
    end)

    it("speaks TLS from the start with implicit_tls", function()
      if not need() then return end
      local srv = servers.fake{
        implicit_tls = true,
        tls = { cert = C.good, key = C.good_key },
        steps = { { send = "220 tls ESMTP\r\n" }, { expect = "^QUIT$" }, { send = "221 bye\r\n" } },
      }
      local t = assert(tls_wrap(connect(srv.port), C.ca))
      assert.equal(220, (reply(t)))
      assert.equal(221, (cmd(t, "QUIT")))
      t:close()
      assert.is_true(srv:wait(5))
      assert.equal("QUIT\r\n", srv:received())
      srv:stop()
    end)

    it("discards what the client sent ahead of the handshake", function()
      if not need() then return end
      local srv = servers.fake{
        tls = { cert = C.good, key = C.good_key },
        steps = {
          { expect = "^STARTTLS$" },
          { send = "220 go ahead\r\n" },
          { starttls = true },
          { expect = "^EHLO " },
          { send = "250 ok\r\n" },
        },
      }
      local c = connect(srv.port)
      -- pipelined after STARTTLS: a plaintext command a server must drop
      assert(c:send("STARTTLS\r\nNOOP\r\n"))
      assert.equal(220, (reply(c)))
      local t = assert(tls_wrap(c, C.ca))
      assert.equal(250, (cmd(t, "EHLO x")))   -- not a reply to NOOP
      t:close()
      assert.is_true(srv:wait(5))
      assert.matches("TLS: discarded 6 bytes read ahead", srv:errors(), 1, true)
      assert.equal("STARTTLS\r\nNOOP\r\nEHLO x\r\n", srv:received())
      srv:stop()
    end)

    it("can inject plaintext right before the handshake", function()
      if not need() then return end
      local srv = servers.fake{
        tls = { cert = C.good, key = C.good_key },
        steps = {
          { expect = "^STARTTLS$" },
          { send = "220 go ahead\r\n250-injected\r\n" },   -- one write
          { starttls = true },
          { expect = "^QUIT$" },
        },
      }
      local c = connect(srv.port)
      assert(c:send("STARTTLS\r\n"))
      assert.equal("220 go ahead", c:receive("*l"))
      assert.equal("250-injected", c:receive("*l"))
      local t = assert(tls_wrap(c, C.ca))
      assert(t:send("QUIT\r\n"))
      t:close()
      assert.is_true(srv:wait(5))
      srv:stop()
    end)

    it("survives a client that rejects its certificate", function()
      if not need() then return end
      local srv = servers.fake{
        connections = 2,
        tls = { cert = C.selfsigned, key = C.selfsigned_key },
        implicit_tls = true,
        steps = { { send = "220 hi\r\n" } },
      }
      local t, err = tls_wrap(connect(srv.port), C.ca)
      assert.is_nil(t)
      assert.matches("certificate", tostring(err))
      -- the next connection is served as usual
      t = assert(tls_wrap(connect(srv.port), C.selfsigned))
      assert.equal("220 hi", t:receive("*l"))
      t:close()
      assert.is_true(srv:wait(5))
      assert.matches("TLS: handshake failed", srv:errors(), 1, true)
      srv:stop()
    end)

    it("can require a client certificate", function()
      if not need() then return end
      local srv = servers.fake{
        connections = 2,
        implicit_tls = true,
        tls = { cert = C.good, key = C.good_key, cafile = C.ca, verify = { "peer", "fail_if_no_peer_cert" } },
        steps = { { send = "220 hi\r\n" } },
      }
      for _, with_cert in ipairs({ true, false }) do
        local t = assert(ssl.wrap(connect(srv.port), {
          mode = "client", protocol = "any", options = { "all" }, verify = "peer", cafile = C.ca,
          certificate = with_cert and C.client or nil, key = with_cert and C.client_key or nil,
        }))
        t:settimeout(5)
        t:dohandshake()   -- TLS 1.3: a refusal shows only on the first read
        local line = t:receive("*l")
        if with_cert then assert.equal("220 hi", line) else assert.is_nil(line) end
        t:close()
      end
      assert.is_true(srv:wait(5))
      assert.matches("TLS: client certificate CN=lua-smtp test client", srv:errors(), 1, true)
      assert.matches("TLS: handshake failed: peer did not return a certificate", srv:errors(), 1, true)
      srv:stop()
    end)
  end)

  describe("Postfix #postfix", function()
    local pf
    local zombies_before = {}
    local USERS = { { "alice", "secret" }, { "bób", "pässwörd" } }

    local function need()
      if not postfix.available() then
        pending("postfix / dovecot-core are not installed")
        return false
      end
      if not (have_ssl and have_mime) then
        pending("LuaSec is not installed")
        return false
      end
      assert(pf, "postfix did not start")
      return true
    end

    lazy_setup(function()
      for _, z in ipairs(orphan_zombies()) do zombies_before[z.pid] = true end
      if postfix.available() and have_ssl then
        pf = postfix.start{ users = USERS, certs_dir = shared_certs().dir }
      end
    end)

    lazy_teardown(function()
      if pf then pf:stop() end
    end)

    local function s_client(port, extra)
      return run("timeout 10 openssl s_client -connect 127.0.0.1:" .. port
        .. " " .. (extra or "") .. " </dev/null")
    end

    it("gives three ports, certificates and an empty maildir", function()
      if not need() then return end
      for _, k in ipairs({ "plain", "submission", "smtps" }) do
        assert.is_number(pf.ports[k])
      end
      assert.equal(shared_certs().good, pf.certs.good)
      assert.same({}, pf:messages(0))
      assert.matches("daemon started", pf.log(), 1, true)
      assert.equal(pf.log(), pf:log())
    end)

    it("greets on the plain port and offers STARTTLS but no AUTH before it", function()
      if not need() then return end
      local c = connect(pf.ports.plain)
      local code, lines = reply(c)
      assert.equal(220, code)
      assert.matches("ESMTP", lines[1], 1, true)
      local caps = ehlo(c)
      assert.is_true(caps.STARTTLS)
      for cap in pairs(caps) do assert.not_matches("^AUTH", cap) end
      assert.equal(503, (cmd(c, "AUTH PLAIN " .. b64("\0alice\0secret"))))
      assert.equal(221, (cmd(c, "QUIT")))
      c:close()
    end)

    it("does STARTTLS with the good certificate on plain and submission", function()
      if not need() then return end
      for _, port in ipairs({ pf.ports.plain, pf.ports.submission }) do
        local ok, out = s_client(port, "-starttls smtp -CAfile " .. sh_quote(pf.certs.ca)
          .. " -verify_return_error -servername localhost -verify_hostname localhost")
        assert.is_true(ok, out)
        assert.matches("Verify return code: 0 (ok)", out, 1, true)
      end
      -- and a client trusting another CA refuses it
      local ok, out = s_client(pf.ports.plain, "-starttls smtp -CAfile "
        .. sh_quote(pf.certs.other_ca) .. " -verify_return_error -servername localhost")
      assert.is_false(ok, out)
    end)

    it("does implicit TLS on the smtps port", function()
      if not need() then return end
      local ok, out = s_client(pf.ports.smtps, "-CAfile " .. sh_quote(pf.certs.ca)
        .. " -verify_return_error -servername localhost")
      assert.is_true(ok, out)
      assert.matches("Verify return code: 0 (ok)", out, 1, true)
      local t = assert(tls_wrap(connect(pf.ports.smtps), pf.certs.ca))
      assert.equal(220, (reply(t)))
      local caps = ehlo(t)
      assert.is_true(caps["AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256"])
      assert.is_nil(caps.STARTTLS)
      assert.equal(221, (cmd(t, "QUIT")))
      t:close()
    end)

    it("requires STARTTLS and AUTH on the submission port", function()
      if not need() then return end
      local c = connect(pf.ports.submission)
      assert.equal(220, (reply(c)))
      ehlo(c)
      local code, lines = cmd(c, "MAIL FROM:<a@example.org>")
      assert.equal(530, code)
      assert.matches("STARTTLS", lines[1], 1, true)
      assert.equal(220, (cmd(c, "STARTTLS")))
      local t = assert(tls_wrap(c, pf.certs.ca))
      ehlo(t)
      assert.equal(250, (cmd(t, "MAIL FROM:<a@example.org>")))
      code = cmd(t, "RCPT TO:<b@example.net>")
      assert.equal(554, code)
      t:close()
    end)

    it("authenticates through Dovecot after STARTTLS: 535 for a wrong password, 235 for the right one", function()
      if not need() then return end
      local c = connect(pf.ports.plain)
      assert.equal(220, (reply(c)))
      ehlo(c)
      assert.equal(220, (cmd(c, "STARTTLS")))
      local t = assert(tls_wrap(c, pf.certs.ca))
      local caps = ehlo(t)
      assert.is_true(caps["AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256"])
      local code, lines = cmd(t, "AUTH PLAIN " .. b64("\0alice\0wrong"))
      assert.equal(535, code)
      assert.matches("^535 5%.7%.8", lines[1])
      code = cmd(t, "AUTH PLAIN " .. b64("\0alice\0secret"))
      assert.equal(235, code)
      assert.equal(221, (cmd(t, "QUIT")))
      t:close()

      -- UTF-8 user name and password, AUTH LOGIN, on the submission port
      c = connect(pf.ports.submission)
      assert.equal(220, (reply(c)))
      ehlo(c)
      assert.equal(220, (cmd(c, "STARTTLS")))
      t = assert(tls_wrap(c, pf.certs.ca))
      ehlo(t)
      assert.equal(334, (cmd(t, "AUTH LOGIN")))
      assert.equal(334, (cmd(t, b64("bób"))))
      assert.equal(235, (cmd(t, b64("pässwörd"))))
      -- authenticated: submission relays now
      assert.equal(250, (cmd(t, "MAIL FROM:<bob@example.org>")))
      assert.equal(250, (cmd(t, "RCPT TO:<carol@example.net>")))
      assert.equal(221, (cmd(t, "QUIT")))
      t:close()
      -- the maillog is written asynchronously (postlogd)
      assert.is_true(wait_for(5, function()
        return pf.log():find("sasl_username=bób", 1, true) ~= nil
      end), pf.log())
    end)

    it("delivers a message sent over plain SMTP to the maildir", function()
      if not need() then return end
      pf:clear()
      local c = connect(pf.ports.plain)
      assert.equal(220, (reply(c)))
      ehlo(c)
      assert.equal(250, (cmd(c, "MAIL FROM:<sender@example.org>")))
      assert.equal(250, (cmd(c, "RCPT TO:<rcpt@example.net>")))
      assert.equal(354, (cmd(c, "DATA")))
      local code, lines = cmd(c, "Subject: harness\r\nX-Test: 1\r\n\r\n..dot\r\nbody\r\n.")
      assert.equal(250, code)
      assert.matches("queued as", lines[1], 1, true)
      assert.equal(221, (cmd(c, "QUIT")))
      c:close()
      local msgs = pf:messages(1, 10)
      assert.equal(1, #msgs)
      local m = msgs[1]
      assert.equal("sender@example.org", m.sender)
      assert.equal("rcpt@example.net", m.recipient)
      assert.equal("Subject: harness\nX-Test: 1\n\n.dot\nbody\n", m.content)
      assert.matches("^Received: from client%.example", m.data)
      pf:clear()
      assert.same({}, pf:messages(0))
    end)

    it("reports a message that does not arrive, with the maillog", function()
      if not need() then return end
      local t0 = socket.gettime()
      local ok, err = pcall(pf.messages, pf, 1, 0.3)
      assert.is_false(ok)
      assert.matches("expected 1 message", err, 1, true)
      assert.matches("maillog", err, 1, true)
      -- its 0.3 s, not the default 10 s (room for a loaded machine)
      assert.is_true(socket.gettime() - t0 < 5)
    end)

    it("stops, leaving no process of the instance behind", function()
      if not need() then return end
      local pids = pf:pids()
      assert.is_true(#pids >= 4)
      local dir, pidns = pf.dir, pf.pidns
      pf:stop()
      for _, pid in ipairs(pids) do
        assert.is_false(servers.alive(pid), "pid " .. pid .. " still there")
      end
      -- "[/]" keeps the pattern from matching pgrep's own shell
      local _, out = run("pgrep -f " .. sh_quote("[/]" .. dir:sub(2)) .. " || true")
      assert.equal("", out)
      local ok = run("test -e " .. sh_quote(dir))
      assert.is_false(ok)
      assert.is_true(pf:stop())   -- twice is fine
      -- nothing left as a zombie of PID 1 (which does not reap here)
      local names = {}
      for n in ("master smtpd qmgr pickup postlogd tlsmgr cleanup trivial-rewrite "
        .. "pipe proxymap anvil scache bounce sh dovecot log config auth stats"):gmatch("%S+") do
        names[n] = true
      end
      -- without a PID namespace Dovecot's log process outlives its master
      -- (a known limitation of that fallback, see postfix.lua)
      if not pidns then names.log = nil end
      local new = {}
      for _, z in ipairs(orphan_zombies()) do
        if not zombies_before[z.pid] and names[z.comm] then new[#new + 1] = z.pid .. " " .. z.comm end
      end
      assert.same({}, new)
    end)
  end)
end)
