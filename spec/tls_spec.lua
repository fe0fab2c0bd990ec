-- TLS: the tls modes ("starttls", "implicit", "auto", "none") against a real
-- Postfix (spec/support/postfix.lua), bad certificates and STARTTLS hygiene
-- against the scriptable fake server (spec/support/fake_server.lua, TLS by
-- LuaSec), client certificates. Certificates: spec/support/certs.lua.
-- Tags: #tls everywhere, #postfix for the Postfix part (pending when
-- postfix / dovecot-core are missing or we are not root).
local smtp = require "smtp"
local socket = require "socket"
local servers = require "spec.support.servers"
local certs = require "spec.support.certs"
local util = require "spec.support.util"
local postfix = require "spec.support.postfix"


local HELO = "client.example"
local EHLO = "EHLO " .. HELO .. "\r\n"
local FROM, TO = "sender@example.org", "rcpt@example.net"

local tmp, C

local function shared_certs()
  if not C then C, tmp = certs.in_temp_dir("lua-smtp-tls") end
  return C
end

local recorder, find_line, exact = servers.recorder, servers.find_line, servers.exact

local GREET = { send = "220 fake.test ESMTP\r\n" }

-- The plaintext part of a STARTTLS session, up to the server's 220.
local function starttls_prefix(go)
  return {
    GREET,
    { expect = exact("EHLO " .. HELO) },
    { send = "250-fake.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n" },
    { expect = "^STARTTLS$" },
    { send = go or "220 2.0.0 go ahead\r\n" },
    { starttls = true },
  }
end

-- After the handshake: EHLO, a capability list, then QUIT.
local function after_tls(caps)
  return {
    { expect = "^EHLO " },
    { send = caps or "250-fake.test over TLS\r\n250 8BITMIME\r\n" },
    { expect = "^QUIT$" },
    { send = "221 2.0.0 bye\r\n" },
  }
end

local function concat(...)
  local out = {}
  for _, list in ipairs({ ... }) do
    for _, st in ipairs(list) do out[#out + 1] = st end
  end
  return out
end

local function base_opts(port, extra)
  local o = { host = "localhost", port = port, helo = HELO, timeout = 5, cafile = C.ca }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Every "send" line of a transcript comes before its first TLS handshake
-- line: nothing was written after the handshake started.
local function nothing_sent_after_handshake(lines)
  local hs = find_line(lines, "^tls: handshake")
  assert.is_number(hs, "no handshake line in the transcript")
  for i = hs + 1, #lines do
    assert.is_nil(lines[i]:match("^send: "), "sent after the handshake: " .. lines[i])
  end
end

describe("TLS #tls", function()
  lazy_teardown(function()
    servers.stop_all()
    postfix.stop_all()
    util.remove_tree(tmp)
  end)

  after_each(function()
    servers.stop_all()
  end)

  local function need_fake()
    local why = certs.missing(true)
    if why then
      pending(why .. " (the fake server needs it for TLS)")
      return false
    end
    shared_certs()
    return true
  end

  describe("against Postfix #postfix", function()
    local pf

    local function need()
      if not postfix.available() then
        pending("postfix / dovecot-core are not installed (or not root)")
        return false
      end
      pf = postfix.start{ users = { { "alice", "secret" } }, certs_dir = shared_certs().dir }
      return true
    end

    after_each(function()
      if pf then pf:stop() end
      pf = nil
      postfix.stop_all()
    end)

    local function message(subject)
      return { from = FROM, to = TO, subject = subject, text = "body of " .. subject .. "\n" }
    end

    local function delivered(subject)
      local msgs = pf:messages(1)
      assert.equal(1, #msgs)
      assert.equal(FROM, msgs[1].sender)
      assert.equal(TO, msgs[1].recipient)
      assert.matches("\nSubject: " .. subject .. "\n", "\n" .. msgs[1].content, 1, true)
      assert.matches("\n\nbody of " .. subject .. "\n$", msgs[1].content)
      -- Postfix notes TLS in its Received: header
      assert.matches("with ESMTPS", msgs[1].data, 1, true)
    end

    it("tls = starttls on the plain port: verified for localhost, EHLO again, delivered", function()
      if not need() then return end
      local lines, dbg = recorder()
      local spec = message("starttls verified")
      for k, v in pairs(base_opts(pf.ports.plain, { tls = "starttls", servername = "localhost",
                                                     debug = dbg })) do
        spec[k] = v
      end
      local res, err = smtp.send(spec)
      assert.is_table(res, err)
      assert.same({ TO }, res.accepted)
      delivered("starttls verified")

      local starttls = find_line(lines, "send: 'STARTTLS\\r\\n'", true)
      assert.is_number(starttls)
      local hs = find_line(lines, "tls: handshake, verifying the certificate for localhost", true)
      assert.is_true(hs > starttls)
      local vi, version = find_line(lines, "^tls: TLSv1%.[23] ")
      assert.is_true(vi == hs + 1, version)
      -- EHLO twice: before STARTTLS and right after the handshake
      assert.equal("send: 'EHLO client.example\\r\\n'", lines[vi + 1])
      assert.is_true(find_line(lines, "send: 'EHLO client.example\\r\\n'", true) < starttls)
      -- AUTH is offered only after TLS on this port
      assert.is_true(find_line(lines, "AUTH PLAIN LOGIN", true) > vi)
    end)

    it("host 127.0.0.1 is verified as an IP address; a foreign CA or another name fail", function()
      if not need() then return end
      local lines, dbg = recorder()
      local s, err = smtp.connect(base_opts(pf.ports.plain, { host = "127.0.0.1", tls = "starttls",
                                                              debug = dbg }))
      assert.is_table(s, err)
      assert.is_true(s.tls)
      assert.truthy(find_line(lines, "tls: handshake, verifying the certificate for 127.0.0.1", true))
      assert.truthy(find_line(lines, "^tls: TLSv1%.[23] "))
      assert.is_table(s:send(message("by IP")))
      s:quit()
      delivered("by IP")

      -- the certificate names localhost and 127.0.0.1, not this
      local s2, err2, info2 = smtp.connect(base_opts(pf.ports.plain, { host = "127.0.0.1",
        tls = "starttls", servername = "mail.example" }))
      assert.is_nil(s2)
      assert.equal("tls", info2.kind)
      assert.matches("hostname mismatch", err2:lower(), 1, true)
      -- a CA that did not sign it (Postfix sends the test CA along with its
      -- certificate, so OpenSSL finds an untrusted self-signed root)
      local s3, err3, info3 = smtp.connect(base_opts(pf.ports.plain, { tls = "starttls",
        cafile = C.other_ca }))
      assert.is_nil(s3)
      assert.equal("tls", info3.kind)
      assert.matches("^tls: certificate verify failed: self[%- ]signed certificate in certificate chain$", err3)
    end)

    it("tls = implicit on the smtps port: TLS before the greeting, delivered", function()
      if not need() then return end
      local lines, dbg = recorder()
      local s, err = smtp.connect(base_opts(pf.ports.smtps, { tls = "implicit", debug = dbg }))
      assert.is_table(s, err)
      assert.is_true(s.tls)
      local hs = find_line(lines, "tls: handshake, verifying the certificate for localhost", true)
      local vi = find_line(lines, "^tls: TLSv1%.[23] ")
      local greeting = find_line(lines, "^reply: b'220 ")
      assert.is_true(hs < vi and vi < greeting)
      assert.is_nil(find_line(lines, "STARTTLS", true))
      assert.is_nil(s.capabilities.STARTTLS)
      assert.truthy(s.capabilities.AUTH)
      assert.is_table(s:send(message("implicit")))
      s:quit()
      delivered("implicit")
    end)

    it("tls = auto upgrades when STARTTLS is offered; tls = none does not", function()
      if not need() then return end
      local lines, dbg = recorder()
      local s, err = smtp.connect(base_opts(pf.ports.plain, { tls = "auto", debug = dbg }))
      assert.is_table(s, err)
      assert.is_true(s.tls)
      assert.truthy(find_line(lines, "send: 'STARTTLS\\r\\n'", true))
      assert.truthy(find_line(lines, "^tls: TLSv1%.[23] "))
      assert.is_nil(s.capabilities.STARTTLS)   -- the post-TLS list
      assert.truthy(s.capabilities.AUTH)
      assert.is_table(s:send(message("auto")))
      s:quit()
      delivered("auto")

      local plain_lines, pdbg = recorder()
      s, err = smtp.connect(base_opts(pf.ports.plain, { tls = "none", debug = pdbg }))
      assert.is_table(s, err)
      assert.is_falsy(s.tls)
      assert.truthy(s.capabilities.STARTTLS)
      assert.is_nil(find_line(plain_lines, "send: 'STARTTLS", true))
      assert.is_nil(find_line(plain_lines, "^tls: "))
      s:quit()
    end)

    -- Contexts and sessions are kept for the life of the Lua state
    -- (core.tls_cache() counts them); counters are compared before and after.
    local core = require "smtp.core"
    local function delta(before)
      local now = core.tls_cache()
      return { built = now.built - before.built, handshakes = now.handshakes - before.handshakes,
               resumed = now.resumed - before.resumed }
    end

    it("a second connection reuses the context and resumes the TLS session, still verified", function()
      if not need() then return end
      local before = core.tls_cache()
      local lines1, dbg1 = recorder()
      local s1, err1 = smtp.connect(base_opts(pf.ports.plain, { tls = "starttls", debug = dbg1 }))
      assert.is_table(s1, err1)
      assert.is_false(s1.tls_resumed)   -- a new Postfix: nothing to resume yet
      assert.is_table(s1:send(message("first of two")))
      s1:quit()
      local kept = core.tls_cache().sessions
      assert.is_true(kept >= 1)

      -- the same server under another name, or with another CA: refused as
      -- before; the session kept for localhost is neither offered nor lost
      local s3, err3, info3 = smtp.connect(base_opts(pf.ports.plain, { host = "127.0.0.1",
        tls = "starttls", servername = "mail.example" }))
      assert.is_nil(s3)
      assert.equal("tls", info3.kind)
      assert.matches("hostname mismatch (server name 'mail.example')", err3, 1, true)
      local s4, err4, info4 = smtp.connect(base_opts(pf.ports.plain, { tls = "starttls",
        cafile = C.other_ca }))
      assert.is_nil(s4)
      assert.equal("tls", info4.kind)
      assert.matches("^tls: certificate verify failed: self[%- ]signed certificate in certificate chain$", err4)
      assert.equal(kept, core.tls_cache().sessions)

      -- and the good settings resume
      local lines2, dbg2 = recorder()
      local s2, err2 = smtp.connect(base_opts(pf.ports.plain, { tls = "starttls", debug = dbg2 }))
      assert.is_table(s2, err2)
      assert.is_true(s2.tls_resumed)
      s2:quit()
      local d = delta(before)
      -- 0 or 1 for localhost (an earlier test may have built it), 1 for the other CA
      assert.is_true(d.built <= 2, "contexts built: " .. d.built)
      assert.equal(2, d.handshakes)   -- refused handshakes are not counted
      assert.equal(1, d.resumed)
      assert.truthy(find_line(lines2, "tls: handshake, verifying the certificate for localhost", true))
      assert.truthy(find_line(lines2, "^tls: TLSv1%.[23] .* %(resumed session%)$"))
      assert.is_nil(find_line(lines1, "resumed", true))
      delivered("first of two")
    end)

    -- Driven on the core socket to see the cache between connections. A
    -- TLS 1.3 ticket is offered again (see docs/auth.md on RFC 8446 C.4):
    -- Postfix hands out none on a resumed connection, and single use would
    -- resume only every other connection.
    it("a TLS 1.3 ticket resumes every later connection; Postfix issues none on a resumed one", function()
      if not need() then return end
      local function reply(sock)
        local buf = ""
        for _ = 1, 50 do
          if buf:find("^%d%d%d [^\r\n]*\r\n$") or buf:find("\n%d%d%d [^\r\n]*\r\n$") then
            return buf
          end
          buf = buf .. assert(sock:receive())
        end
        error("no complete reply: " .. buf)
      end
      local function tls_session(server)   -- up to TLS and EHLO again (the ticket comes with its reply)
        local sock = core.socket()
        sock:settimeouts(5)
        assert(sock:connect("127.0.0.1", pf.ports.plain))
        reply(sock)
        assert(sock:send("EHLO " .. HELO .. "\r\n"))
        reply(sock)
        assert(sock:send("STARTTLS\r\n"))
        assert.matches("^220", reply(sock))
        assert(sock:starttls{ servername = "localhost", cafile = C.ca, server = server })
        assert(sock:send("EHLO " .. HELO .. "\r\n"))
        assert.matches("^250", reply(sock))
        local version, _, resumed = sock:tls_info()
        sock:close()
        return version, resumed
      end
      core.tls_cache_clear()
      local version, resumed = tls_session()
      assert.is_false(resumed)
      if version ~= "TLSv1.3" then
        pending("this Postfix/OpenSSL negotiated " .. tostring(version) .. ", not TLS 1.3")
        return
      end
      assert.equal(1, core.tls_cache().sessions)
      for _ = 1, 3 do
        local v, r = tls_session()
        assert.equal("TLSv1.3", v)
        assert.is_true(r)
        assert.equal(1, core.tls_cache().sessions)
      end
      -- Through a proxy the socket's peer is the proxy and the caller names
      -- the server behind it: another server, another slot, no resumption.
      local _, r1 = tls_session("mx1.example:25")
      local _, r2 = tls_session("mx2.example:25")
      local _, r3 = tls_session("mx1.example:25")
      assert.is_false(r1)
      assert.is_false(r2)
      assert.is_true(r3)
      assert.equal(3, core.tls_cache().sessions)
    end)

    it("a changed CA file gives a new context and no resumption across it", function()
      if not need() then return end
      local cafile = tmp .. "/reuse-ca.crt"
      local function write_ca(extra)
        local src = assert(io.open(C.ca, "rb"))
        local pem = src:read("*a")
        src:close()
        local f = assert(io.open(cafile, "wb"))
        f:write(pem, extra or "")
        f:close()
      end
      write_ca()
      local before = core.tls_cache()
      local s1, err1 = smtp.connect(base_opts(pf.ports.plain, { tls = "starttls", cafile = cafile }))
      assert.is_table(s1, err1)
      s1:quit()
      local s2, err2 = smtp.connect(base_opts(pf.ports.plain, { tls = "starttls", cafile = cafile }))
      assert.is_table(s2, err2)
      assert.is_true(s2.tls_resumed)
      s2:quit()
      assert.same({ built = 1, handshakes = 2, resumed = 1 }, delta(before))

      write_ca("\n# rewritten\n")   -- same path, other contents
      before = core.tls_cache()
      local s3, err3 = smtp.connect(base_opts(pf.ports.plain, { tls = "starttls", cafile = cafile }))
      assert.is_table(s3, err3)
      assert.is_false(s3.tls_resumed)
      s3:quit()
      assert.same({ built = 1, handshakes = 1, resumed = 0 }, delta(before))

      -- a CA file that no longer trusts the server: refused, whatever was cached
      local f = assert(io.open(C.other_ca, "rb"))
      local other = f:read("*a")
      f:close()
      f = assert(io.open(cafile, "wb"))
      f:write(other)
      f:close()
      local s4, err4, info4 = smtp.connect(base_opts(pf.ports.plain, { tls = "starttls", cafile = cafile }))
      assert.is_nil(s4)
      assert.equal("tls", info4.kind, err4)
      os.remove(cafile)
    end)

    it("verify = false accepts a name the certificate does not carry, and says so", function()
      if not need() then return end
      local lines, dbg = recorder()
      local s, err = smtp.connect(base_opts(pf.ports.submission, { tls = "starttls", verify = false,
        servername = "mail.example", cafile = C.other_ca, debug = dbg }))
      assert.is_table(s, err)
      assert.is_true(s.tls)
      assert.truthy(find_line(lines, "tls: handshake WITHOUT certificate verification (verify = false)", true))
      assert.truthy(find_line(lines, "^tls: TLSv1%.[23] "))
      s:quit()
    end)
  end)

  describe("bad certificates", function()
    local cases = {
      { cert = "expired", reason = "certificate has expired" },
      { cert = "wronghost", reason = "hostname mismatch" },
      { cert = "selfsigned", reason = "self[%- ]signed certificate" },
      { cert = "good", cafile = "other_ca", reason = "unable to get local issuer certificate" },
    }
    for _, case in ipairs(cases) do
      local name = case.cert .. (case.cafile and " (trusting another CA)" or "")

      it("STARTTLS, " .. name .. ": kind tls, nothing sent after STARTTLS", function()
        if not need_fake() then return end
        local srv = servers.fake{
          tls = { cert = C[case.cert], key = C[case.cert .. "_key"] },
          steps = concat(starttls_prefix(), after_tls()),
        }
        local lines, dbg = recorder()
        local opts = base_opts(srv.port, { tls = "starttls", debug = dbg,
          cafile = case.cafile and C[case.cafile] or C.ca })
        opts.from, opts.to, opts.subject, opts.text = FROM, TO, "never", "never sent\n"
        local res, err, info = smtp.send(opts)
        assert.is_nil(res)
        assert.equal("tls", info.kind)
        assert.equal("starttls", info.stage)
        assert.is_false(info.temporary)
        assert.matches("^tls: certificate verify failed: ", err)
        assert.matches(case.reason, err:lower())
        assert.is_true(srv:wait(5))
        -- the plaintext the server saw ends with STARTTLS: no fallback
        assert.equal(EHLO .. "STARTTLS\r\n", srv:received())
        assert.matches("TLS: handshake failed", srv:errors(), 1, true)
        nothing_sent_after_handshake(lines)
      end)

      it("implicit TLS, " .. name .. ": kind tls, nothing sent at all", function()
        if not need_fake() then return end
        local srv = servers.fake{
          implicit_tls = true,
          tls = { cert = C[case.cert], key = C[case.cert .. "_key"] },
          steps = concat({ GREET }, after_tls()),
        }
        local lines, dbg = recorder()
        local s, err, info = smtp.connect(base_opts(srv.port, { tls = "implicit", debug = dbg,
          cafile = case.cafile and C[case.cafile] or C.ca }))
        assert.is_nil(s)
        assert.equal("tls", info.kind)
        assert.equal("tls", info.stage)  -- the implicit-TLS handshake: no STARTTLS was sent
        assert.is_false(info.temporary)
        assert.matches(case.reason, err:lower())
        assert.is_true(srv:wait(5))
        assert.equal("", srv:received())
        nothing_sent_after_handshake(lines)
      end)
    end

    it("a cached context still refuses bad certificates after a verified connection", function()
      if not need_fake() then return end
      local good = servers.fake{
        implicit_tls = true,
        tls = { cert = C.good, key = C.good_key },
        steps = concat({ GREET }, after_tls()),
      }
      local s, err = smtp.connect(base_opts(good.port, { tls = "implicit" }))
      assert.is_table(s, err)
      s:quit()
      assert.is_true(good:wait(5))
      for _, case in ipairs(cases) do
        if not case.cafile then
          local srv = servers.fake{
            implicit_tls = true,
            tls = { cert = C[case.cert], key = C[case.cert .. "_key"] },
            steps = { GREET },
          }
          local s2, err2, info2 = smtp.connect(base_opts(srv.port, { tls = "implicit" }))
          assert.is_nil(s2)
          assert.equal("tls", info2.kind)
          assert.matches(case.reason, err2:lower())
          srv:stop()
        end
      end
    end)

    it("host 127.0.0.1 against a certificate without that IP: IP address mismatch", function()
      if not need_fake() then return end
      local srv = servers.fake{
        implicit_tls = true,
        tls = { cert = C.wronghost, key = C.wronghost_key },
        steps = { GREET },
      }
      local s, err, info = smtp.connect(base_opts(srv.port, { host = "127.0.0.1", tls = "implicit" }))
      assert.is_nil(s)
      assert.equal("tls", info.kind)
      assert.equal("tls: certificate verify failed: IP address mismatch (server name '127.0.0.1')", err)
    end)

    it("verify = false connects to the wrong-host certificate and the transcript says so", function()
      if not need_fake() then return end
      local srv = servers.fake{
        tls = { cert = C.wronghost, key = C.wronghost_key },
        steps = concat(starttls_prefix(), after_tls()),
      }
      local lines, dbg = recorder()
      local s, err = smtp.connect(base_opts(srv.port, { tls = "starttls", verify = false, debug = dbg }))
      assert.is_table(s, err)
      assert.is_true(s.tls)
      s:quit()
      assert.truthy(find_line(lines, "tls: handshake WITHOUT certificate verification (verify = false)", true))
      assert.is_nil(find_line(lines, "verifying the certificate", true))
      assert.is_true(srv:wait(5))
      assert.equal(EHLO .. "STARTTLS\r\n" .. EHLO .. "QUIT\r\n", srv:received())
    end)

    it("never falls back to plaintext after a failed handshake (tls = auto, no reconnect)", function()
      if not need_fake() then return end
      for _, implicit in ipairs({ false, true }) do
        local srv = servers.fake{
          connections = 2,   -- a second, plaintext attempt would be served and recorded
          implicit_tls = implicit,
          tls = { cert = C.expired, key = C.expired_key },
          steps = implicit and concat({ GREET }, after_tls()) or concat(starttls_prefix(), after_tls()),
        }
        local opts = base_opts(srv.port, { tls = implicit and "implicit" or "auto" })
        opts.from, opts.to, opts.subject, opts.text = FROM, TO, "never", "never sent\n"
        local res, err, info = smtp.send(opts)
        assert.is_nil(res)
        assert.equal("tls", info.kind, err)
        socket.sleep(0.3)
        assert.is_true(srv:alive())   -- still waiting for a second connection
        assert.equal(implicit and "" or EHLO .. "STARTTLS\r\n", srv:received())
        srv:stop()
      end
    end)
  end)

  -- RFC 9525 name checks, with the certificates of spec/fixtures/tls-names
  -- (signed by its own CA, which these connections trust, so that only the
  -- name decides). The rule lives in smtp_tls.c (smtp_tls_check_name);
  -- spec/resty_spec.lua holds the same cases for the cosocket transport.
  describe("certificate names (RFC 9525)", function()
    local NAMES = servers.root .. "/spec/fixtures/tls-names/"

    -- Implicit TLS to 127.0.0.1 with the fixture certificate cert; extra:
    -- connect options (servername, verify ...). Returns smtp.connect's
    -- results, the session already quit.
    local function try(cert, extra)
      local srv = servers.fake{
        implicit_tls = true,
        tls = { cert = NAMES .. cert .. ".crt", key = NAMES .. "leaf.key" },
        steps = concat({ GREET }, after_tls()),
      }
      local opts = base_opts(srv.port, { host = "127.0.0.1", tls = "implicit",
                                         cafile = NAMES .. "ca.crt" })
      for k, v in pairs(extra or {}) do opts[k] = v end
      local s, err, info = smtp.connect(opts)
      if s then s:quit() end
      srv:stop()
      return s, err, info
    end

    local function accepted(cert, extra)
      local s, err = try(cert, extra)
      assert.is_table(s, cert .. " for " .. tostring(extra and extra.servername) .. ": " .. tostring(err))
      assert.is_true(s.tls)
    end

    local function refused(cert, extra, message)
      local s, err, info = try(cert, extra)
      assert.is_nil(s, cert .. " for " .. tostring(extra and extra.servername) .. " was accepted")
      assert.equal("tls", info.kind)
      assert.equal("tls", info.stage)
      assert.is_false(info.temporary)
      if message then assert.equal("tls: certificate verify failed: " .. message, err) end
      return err
    end

    it("a certificate without subjectAltName is refused although its CN is the name", function()
      if not need_fake() then return end
      refused("cn-only", { servername = "localhost" }, "hostname mismatch (server name 'localhost'):" ..
        " the certificate has no subjectAltName, and its subject CN is not used (RFC 9525)")
      -- the same with the name from host (servername defaults to it)
      refused("cn-only", { host = "localhost" }, "hostname mismatch (server name 'localhost'):" ..
        " the certificate has no subjectAltName, and its subject CN is not used (RFC 9525)")
    end)

    it("a DNS-name SAN spelling 127.0.0.1 does not certify the address 127.0.0.1", function()
      if not need_fake() then return end
      local msg = "IP address mismatch (server name '127.0.0.1'): the certificate has 127.0.0.1" ..
        " as a DNS name only, which does not certify an IP address (RFC 9525)"
      refused("dns-ip", nil, msg)   -- servername: the host, 127.0.0.1
      refused("dns-ip", { servername = "127.0.0.1" }, msg)
      refused("dns-ip", { servername = "[127.0.0.1]" },
        "IP address mismatch (server name '[127.0.0.1]'): the certificate has 127.0.0.1" ..
        " as a DNS name only, which does not certify an IP address (RFC 9525)")
    end)

    it("an iPAddress SAN 127.0.0.1 is accepted for 127.0.0.1, and only for it", function()
      if not need_fake() then return end
      accepted("ip")   -- servername: the host, 127.0.0.1
      accepted("ip", { servername = "127.0.0.1" })
      accepted("ip", { servername = "[127.0.0.1]" })
      refused("ip", { servername = "127.0.0.2" }, "IP address mismatch (server name '127.0.0.2')")
      -- an address does not certify a host name either
      refused("ip", { servername = "localhost" }, "hostname mismatch (server name 'localhost')")
    end)

    it("DNS-name SANs: localhost; *.example.test one label deep; never m*.example.test", function()
      if not need_fake() then return end
      accepted("localhost", { servername = "localhost" })
      accepted("localhost", { host = "localhost" })
      refused("localhost", { servername = "127.0.0.1" }, "IP address mismatch (server name '127.0.0.1')")
      accepted("wildcard", { servername = "mail.example.test" })
      refused("wildcard", { servername = "a.b.example.test" },
        "hostname mismatch (server name 'a.b.example.test')")
      refused("wildcard", { servername = "example.test" }, "hostname mismatch (server name 'example.test')")
      -- without servername the name checked is the host, 127.0.0.1
      refused("wildcard", nil, "IP address mismatch (server name '127.0.0.1')")
      refused("partial", { servername = "mail.example.test" },
        "hostname mismatch (server name 'mail.example.test')")
    end)

    it("verify = false accepts every one of them", function()
      if not need_fake() then return end
      for _, case in ipairs({ { "cn-only", "localhost" }, { "dns-ip", "127.0.0.1" },
                              { "ip", "127.0.0.1" }, { "localhost", "localhost" },
                              { "wildcard", "a.b.example.test" }, { "partial", "mail.example.test" } }) do
        accepted(case[1], { servername = case[2], verify = false })
      end
    end)
  end)

  describe("STARTTLS hygiene", function()
    it("tls = starttls and no STARTTLS offered: kind tls, only EHLO was sent (no QUIT)", function()
      if not need_fake() then return end
      local srv = servers.fake{
        steps = { GREET, { expect = "^EHLO " }, { send = "250-fake.test\r\n250 AUTH PLAIN\r\n" } },
      }
      local opts = base_opts(srv.port, { tls = "starttls" })
      opts.from, opts.to, opts.subject, opts.text = FROM, TO, "never", "never sent\n"
      local res, err, info = smtp.send(opts)
      assert.is_nil(res)
      assert.equal("tls", info.kind)
      assert.equal("starttls", info.stage)
      assert.is_false(info.temporary)
      assert.equal('tls: the server does not offer STARTTLS; tls = "starttls" requires it', err)
      assert.is_true(srv:wait(5))
      -- the library closes the connection without QUIT
      assert.equal(EHLO, srv:received())
    end)

    it("a server refusing STARTTLS (454): kind tls, no plaintext session goes on", function()
      if not need_fake() then return end
      for _, mode in ipairs({ "starttls", "auto" }) do
        local srv = servers.fake{
          steps = { GREET, { expect = "^EHLO " }, { send = "250-fake.test\r\n250 STARTTLS\r\n" },
                    { expect = "^STARTTLS$" }, { send = "454 4.7.0 TLS not available\r\n" } },
        }
        local opts = base_opts(srv.port, { tls = mode })
        opts.from, opts.to, opts.subject, opts.text = FROM, TO, "never", "never sent\n"
        local res, err, info = smtp.send(opts)
        assert.is_nil(res)
        assert.equal("tls", info.kind)
        assert.equal("starttls", info.stage)
        assert.equal(454, info.code)
        assert.equal("4.7.0", info.enhanced)
        assert.is_true(info.temporary)
        assert.equal("tls: server refused STARTTLS: 454 4.7.0 TLS not available", err)
        assert.is_true(srv:wait(5))
        assert.equal(EHLO .. "STARTTLS\r\n", srv:received())
        srv:stop()
      end
    end)

    it("plaintext injected after the 220 is dropped; EHLO again; only post-TLS capabilities", function()
      if not need_fake() then return end
      local srv = servers.fake{
        tls = { cert = C.good, key = C.good_key },
        steps = concat(starttls_prefix("220 go\r\n250-injected\r\n"),   -- one write
          after_tls("250-fake.test over TLS\r\n250-SIZE 1000\r\n250 AUTH PLAIN\r\n")),
      }
      local lines, dbg = recorder()
      local s, err = smtp.connect(base_opts(srv.port, { tls = "starttls", debug = dbg }))
      assert.is_table(s, err)
      assert.is_true(s.tls)
      -- what the session knows is the post-TLS list only
      assert.equal("1000", s.capabilities.SIZE)
      assert.equal("PLAIN", s.capabilities.AUTH)
      assert.is_nil(s.capabilities.PIPELINING)
      assert.is_nil(s.capabilities.STARTTLS)
      assert.is_nil(s.capabilities.INJECTED)
      s:quit()
      assert.is_nil(find_line(lines, "injected", true))
      assert.is_true(srv:wait(5))
      local rec = srv:received()
      local pre = EHLO .. "STARTTLS\r\n"
      assert.equal(pre, rec:sub(1, #pre))
      -- the first thing inside TLS is EHLO
      assert.equal(EHLO .. "QUIT\r\n", rec:sub(#pre + 1))
      assert.matches("TLS: handshake ok", srv:errors(), 1, true)
      assert.not_matches("discarded", srv:errors(), 1, true)
    end)

    it("tls = auto with credentials and no STARTTLS offered: kind tls, no AUTH sent", function()
      if not need_fake() then return end
      local srv = servers.fake{
        steps = { GREET, { expect = "^EHLO " }, { send = "250-fake.test\r\n250 AUTH PLAIN LOGIN\r\n" } },
      }
      local s, err, info = smtp.connect(base_opts(srv.port, { tls = "auto", user = "alice",
                                                              password = "secret" }))
      assert.is_nil(s)
      assert.equal("tls", info.kind)
      assert.equal("starttls", info.stage)
      assert.is_false(info.temporary)
      assert.matches("does not offer STARTTLS", err, 1, true)
      assert.matches("insecure_auth", err, 1, true)
      assert.is_true(srv:wait(5))
      assert.equal(EHLO, srv:received())
    end)

    it("tls = auto without credentials and no STARTTLS offered stays in plaintext", function()
      if not need_fake() then return end
      local srv = servers.fake{
        steps = concat({ GREET }, after_tls("250-fake.test\r\n250 8BITMIME\r\n")),
      }
      local s, err = smtp.connect(base_opts(srv.port, { tls = "auto" }))
      assert.is_table(s, err)
      assert.is_falsy(s.tls)
      s:quit()
      assert.is_true(srv:wait(5))
      assert.equal(EHLO .. "QUIT\r\n", srv:received())
    end)
  end)

  describe("client certificates", function()
    local function requiring_server(implicit)
      local tls = { cert = C.good, key = C.good_key, cafile = C.ca,
                    verify = { "peer", "fail_if_no_peer_cert" } }
      if implicit then
        return servers.fake{ implicit_tls = true, tls = tls, steps = concat({ GREET }, after_tls()) }
      end
      return servers.fake{ tls = tls, steps = concat(starttls_prefix(), after_tls()) }
    end

    it("cert and key are presented to a server that asks for one", function()
      if not need_fake() then return end
      for _, implicit in ipairs({ true, false }) do
        local srv = requiring_server(implicit)
        local s, err = smtp.connect(base_opts(srv.port, { tls = implicit and "implicit" or "starttls",
          cert = C.client, key = C.client_key }))
        assert.is_table(s, err)
        assert.is_true(s.tls)
        s:quit()
        assert.is_true(srv:wait(5))
        assert.matches("TLS: client certificate CN=lua-smtp test client", srv:errors(), 1, true)
        assert.equal(implicit and EHLO .. "QUIT\r\n" or EHLO .. "STARTTLS\r\n" .. EHLO .. "QUIT\r\n",
          srv:received())
        srv:stop()
      end
    end)

    it("without a client certificate the server's refusal is reported", function()
      if not need_fake() then return end
      local srv = requiring_server(true)
      local s, err, info = smtp.connect(base_opts(srv.port, { tls = "implicit" }))
      assert.is_nil(s)
      -- TLS 1.3: the handshake completes on the client side and the refusal
      -- arrives as an alert on the first read; TLS 1.2 fails in the
      -- handshake. Either way it is a TLS problem, not worth retrying.
      assert.equal("tls", info.kind, err)
      assert.is_false(info.temporary)
      assert.matches("certificate", err, 1, true)
      assert.is_true(srv:wait(5))
      assert.matches("peer did not return a certificate", srv:errors(), 1, true)
    end)

    it("a key that does not match the certificate fails before connecting a session", function()
      if not need_fake() then return end
      local srv = requiring_server(true)
      local s, err, info = smtp.connect(base_opts(srv.port, { tls = "implicit",
        cert = C.client, key = C.good_key }))
      assert.is_nil(s)
      assert.equal("tls", info.kind)
      assert.matches("do not match", err, 1, true)
    end)
  end)
end)
