-- Proxies (proxy = "socks5://...", "socks5h://...", "http://..."): the
-- option's checks and pool key; the handshake's bytes and every failure
-- against a scripted fake proxy (spec/support/fake_server.lua, which never
-- connects anywhere: it plays the proxy and then the mail server); and real
-- proxies started by the spec on 127.0.0.1 (spec/support/proxies.lua):
-- Dante (danted, SOCKS5, with and without the username method) and
-- tinyproxy (HTTP CONNECT, BasicAuth), in front of bin/smtp-debug-server or
-- a TLS fake server, and the same through nginx's cosockets when nginx is
-- there. Parts with a real proxy are pending when its binary is missing.
local smtp = require "smtp"
local options = require "smtp.options"
local proxy = require "smtp.proxy"
local socket = require "socket"
local servers = require "spec.support.servers"
local proxies = require "spec.support.proxies"
local certs = require "spec.support.certs"
local postfix = require "spec.support.postfix"

local HELO = "client.example"
local FROM, TO = "ann@example.com", "bob@example.org"

local function raised(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local recorder, find_line = servers.recorder, servers.find_line

-- Waits (bounded) until the debug server printed n messages; its output.
local function wait_messages(dbg, n)
  local out
  local deadline = socket.gettime() + 5
  repeat
    out = dbg:output()
    local _, count = out:gsub("END MESSAGE", "")
    if count >= n then break end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return out
end

local function message(extra)
  local m = { helo = HELO, timeout = 5, tls = "none", from = FROM, to = TO, subject = "via proxy",
              text = "through the tunnel\n" }
  for k, v in pairs(extra or {}) do m[k] = v end
  return m
end

describe("proxy #proxy", function()
  after_each(function() servers.stop_all() end)

  describe("the option", function()
    it("takes socks5://, socks5h:// and http:// with host:port and optional credentials", function()
      for _, url in ipairs({ "socks5://127.0.0.1:1080", "socks5h://proxy.example:1080/",
          "http://u:p@127.0.0.1:3128", "SOCKS5://[::1]:1080", "http://a%40b:p%3Aq%25@h:8080" }) do
        assert.is_table(proxy.parse(url), url)
        assert.has_no.errors(function() options.check({ proxy = url }, "connect") end)
      end
      local p = proxy.parse("http://a%40b:p%3Aq%25@h:8080")
      assert.same({ "http", "h", 8080, "a@b", "p:q%" }, { p.scheme, p.host, p.port, p.user, p.password })
      assert.equal("::1", proxy.parse("socks5://[::1]:1080").host)
    end)

    it("raises at the caller's line for anything else, CR/LF/NUL included", function()
      for _, case in ipairs({
        { "socks4://h:1080", "socks5://" }, { "socks5://h", "host:port" }, { "socks5://h:0", "range" },
        { "socks5://h:99999", "range" }, { "http://u:p\r\nX: y@h:80", "control" },
        { "http://u%0d%0aX:p@h:80", "CR, LF or NUL" }, { "socks5://u:%00@h:1080", "CR, LF or NUL" },
        { "http://h:80/path", "host:port" }, { "http://a%3Ab:c@h:80", "':'" }, { "socks5://u:@h:1080", "both" },
        { "socks5://u:%zz@h:1080", "hex" }, { 1080, "a proxy URL" },
      }) do
        local line = debug.getinfo(1, "l").currentline + 1
        local err = raised(function() smtp.connect{ host = "127.0.0.1", proxy = case[1] } end)
        if case[2] then assert.matches(case[2], err, 1, true) end
        assert.matches("proxy_spec.lua:" .. line .. ":", err, 1, true)
        assert.matches("option 'proxy'", err, 1, true)
      end
    end)

    it("never shows credentials in an error", function()
      for _, url in ipairs({ "socks9://ann:s3cret@h:1", "socks9://ann:s3/cr@et@h:1", "ftp://ann:s3cret@h" }) do
        local err = raised(smtp.connect, { host = "127.0.0.1", proxy = url })
        assert.is_nil(err:find("s3", 1, true), err)
        assert.is_nil(err:find("ann", 1, true), err)
      end
    end)

    it("the mail host with CR, LF or a space raises too (it would be written into CONNECT)", function()
      assert.matches("option 'host'", raised(smtp.connect, { host = "mx.example\r\nX: y",
        proxy = "http://127.0.0.1:3128" }))
    end)

    it("cannot go with path or with a caller's transport", function()
      local _, err, info = smtp.connect{ path = "/tmp/x.sock", proxy = "socks5://127.0.0.1:1080" }
      assert.equal("argument", info.kind)
      assert.matches("path", err)
    end)

    it("is part of the pool key, its credentials only hashed", function()
      local function hash(x) return string.format("%d:%d", #x, (x:byte(1) or 0) + (x:byte(-1) or 0)) end
      local a = options.pool_key({ host = "h", proxy = "socks5://ann:pw-one@127.0.0.1:1080" }, nil, hash)
      local b = options.pool_key({ host = "h", proxy = "socks5://ann:pw-two-x@127.0.0.1:1080" }, nil, hash)
      local c = options.pool_key({ host = "h", proxy = "socks5h://127.0.0.1:1080" }, nil, hash)
      local d = options.pool_key({ host = "h" }, nil, hash)
      assert.are_not.equal(a, b)
      assert.are_not.equal(c, d)
      assert.are_not.equal(a, c)
      for _, k in ipairs({ a, b }) do
        assert.matches("proxy=socks5://127.0.0.1:1080", k, 1, true)
        assert.is_nil(k:find("pw-", 1, true), k)
        assert.is_nil(k:find("ann", 1, true), k)
      end
    end)
  end)

  describe("the handshake over a scripted transport", function()
    local core = require "smtp.core"
    -- A transport whose receive() hands out the replies in turn.
    local function transport(replies, log)
      local t = { closed = false }
      function t.send(_, str, i) log[#log + 1] = str:sub(i) return #str - i + 1 end
      function t.receive()
        local r = table.remove(replies, 1)
        if not r then return nil, "closed", "connection closed by the proxy" end
        return r
      end
      function t.settimeouts() end
      function t:close() self.closed = true end
      return t
    end
    local function run(script, url, host)
      local logs, made, n = {}, {}, 0
      local function connect()
        n = n + 1
        logs[n] = {}
        made[n] = transport(script[n] or {}, logs[n])
        return made[n]
      end
      local tr, a, b = proxy.connect(proxy.parse(url or "socks5://127.0.0.1:1080"), host or "mx.example", 25,
        5, nil, connect)
      return tr, a, b, logs, made, n
    end
    local function two_addresses()
      local real = core.resolve
      core.resolve = function() return { "\192\0\2\1", string.rep("\0", 15) .. "\1" } end
      finally(function() core.resolve = real end)
    end

    it("socks5: the next address after 'host unreachable', through a new connection", function()
      two_addresses()
      local tr, leftover, _, logs, made, n = run({ { "\5\0", "\5\4\0\1\0\0\0\0\0\0" },
        { "\5\0", "\5\0\0\4" .. string.rep("\0", 18) .. "220 mx ESMTP\r\n" } })
      assert.equal(2, n)
      assert.is_true(made[1].closed)
      assert.equal(made[2], tr)
      assert.equal("220 mx ESMTP\r\n", leftover)
      assert.equal("\5\1\0\1\192\0\2\1\0\25", logs[1][2])
      assert.equal("\5\1\0\4" .. string.rep("\0", 15) .. "\1\0\25", logs[2][2])
    end)

    it("socks5: no other address after 'not allowed by ruleset'", function()
      two_addresses()
      local tr, err, info, _, made, n = run({ { "\5\0", "\5\2\0\1\0\0\0\0\0\0" } })
      assert.is_nil(tr)
      assert.equal(1, n)
      assert.is_true(made[1].closed)
      assert.equal(2, info.proxy_status)
      assert.matches("proxy socks5 127.0.0.1:1080, tunnel to 192.0.2.1:25: connection not allowed by ruleset" ..
        " (SOCKS5 reply 2)", err, 1, true)
    end)

    it("the reply read in pieces of any size", function()
      local reply = "\5\0" .. "\5\0\0\3\4abcd\0\25" .. "220 x\r\n"
      for size = 1, 6 do
        local pieces = {}
        for i = 1, #reply, size do pieces[#pieces + 1] = reply:sub(i, i + size - 1) end
        local tr, leftover = run({ pieces }, "socks5h://127.0.0.1:1080")
        assert.is_table(tr)
        -- what came past the reply in the last read is the server's
        local consumed = #reply - #"220 x\r\n"
        local last_end = math.ceil(consumed / size) * size
        assert.equal(reply:sub(consumed + 1, last_end), leftover)
      end
    end)
  end)

  -- The fake proxy: it reads what the client sends for a while (drain),
  -- then answers, step by step; its record file holds every byte received.
  local function fake(steps)
    return servers.fake{ steps = steps, timeout = 10 }
  end
  local D = { drain = 0.25 }
  local SMTP_AFTER = {   -- the mail server's side once the tunnel is open
    D, { send = "250-fake.test\r\n250 PIPELINING\r\n" }, D, { send = "221 bye\r\n" },
  }
  local function concat(...)
    local out = {}
    for _, list in ipairs({ ... }) do
      for _, st in ipairs(list) do out[#out + 1] = st end
    end
    return out
  end
  local SOCKS_OK = "\5\0\0\1\127\0\0\1\9\221"

  describe("a scripted SOCKS5 proxy", function()
    it("socks5: sends the address it resolved; the greeting may come with the proxy's reply", function()
      local srv = fake(concat({ D, { send = "\5\0" }, D, { send = SOCKS_OK .. "220 fake.test ESMTP\r\n" } },
        SMTP_AFTER))
      local lines, trace = recorder()
      local s, err = smtp.connect{ host = "127.0.0.1", port = 2525, tls = "none", helo = HELO, timeout = 5,
        proxy = "socks5://127.0.0.1:" .. srv.port, debug = trace }
      assert.is_table(s, err)
      assert.is_true(s.capabilities.PIPELINING)
      s:quit()
      srv:wait(5)
      local got = srv:received()
      assert.equal("\5\1\0" .. "\5\1\0\1\127\0\0\1\9\221", got:sub(1, 13))
      assert.matches("EHLO client.example\r\n", got, 1, true)
      assert.truthy(find_line(lines, "proxy: via socks5 127.0.0.1:" .. srv.port, true))
      assert.truthy(find_line(lines, "proxy: tunnel to 127.0.0.1:2525 open", true))
      local c = find_line(lines, "^connect: to")
      local p = find_line(lines, "^proxy: via")
      assert.truthy(c < p)
    end)

    it("socks5h: sends the name (ATYP 3) for the proxy to resolve", function()
      local srv = fake(concat({ D, { send = "\5\0" }, D, { send = SOCKS_OK }, { send = "220 fake.test\r\n" } },
        SMTP_AFTER))
      local s, err = smtp.connect{ host = "mail.example.test", port = 587, tls = "none", helo = HELO,
        timeout = 5, proxy = "socks5h://127.0.0.1:" .. srv.port }
      assert.is_table(s, err)
      s:quit()
      srv:wait(5)
      assert.equal("\5\1\0" .. "\5\1\0\3\17mail.example.test\2\75", srv:received():sub(1, 27))
    end)

    it("username/password (RFC 1929), percent-decoded, never in the transcript", function()
      local srv = fake(concat({ D, { send = "\5\2" }, D, { send = "\1\0" }, D,
        { send = SOCKS_OK .. "220 fake.test\r\n" } }, SMTP_AFTER))
      local lines, trace = recorder()
      local s, err = smtp.connect{ host = "127.0.0.1", port = 2525, tls = "none", helo = HELO, timeout = 5,
        proxy = "socks5://ann%40ex:p%40ss:w@127.0.0.1:" .. srv.port, debug = trace }
      assert.is_table(s, err)
      s:quit()
      srv:wait(5)
      assert.equal("\5\2\0\2" .. "\1\6ann@ex\6p@ss:w", srv:received():sub(1, 19))
      for _, l in ipairs(lines) do
        assert.is_nil(l:find("p@ss", 1, true), l)
        assert.is_nil(l:find("p%40ss", 1, true), l)
      end
      assert.truthy(find_line(lines, "<redacted>", true))
    end)

    local function failing(steps, url, extra)
      local srv = fake(steps)
      local o = { host = "127.0.0.1", port = 2525, tls = "none", helo = HELO, timeout = 2,
        proxy = (url or "socks5://127.0.0.1:") .. srv.port }
      for k, v in pairs(extra or {}) do o[k] = v end
      local t0 = socket.gettime()
      local s, err, info = smtp.connect(o)
      assert.is_nil(s)
      return err, info, socket.gettime() - t0
    end

    for rep, text in pairs(proxy.socks_replies) do
      it("reply " .. rep .. " is a connect failure naming it: " .. text, function()
        local err, info = failing({ D, { send = "\5\0" }, D,
          { send = "\5" .. string.char(rep) .. "\0\1\0\0\0\0\0\0" } })
        assert.equal("connect", info.kind)
        assert.equal("connect", info.stage)
        assert.equal("socks5", info.proxy)
        assert.equal(rep, info.proxy_status)
        assert.matches(text .. " (SOCKS5 reply " .. rep .. ")", err, 1, true)
      end)
    end

    it("no acceptable method (X'FF')", function()
      local err, info = failing({ D, { send = "\5\255" } })
      assert.equal("connect", info.kind)
      assert.matches("accepts none of the authentication methods", err, 1, true)
      assert.is_false(info.temporary)
    end)

    it("a refused password", function()
      local err, info = failing({ D, { send = "\5\2" }, D, { send = "\1\1" } }, "socks5://u:wrong@127.0.0.1:")
      assert.equal("connect", info.kind)
      assert.matches("authentication failed", err, 1, true)
      assert.is_nil(err:find("wrong", 1, true))
    end)

    it("garbage instead of a SOCKS5 reply", function()
      local err, info = failing({ D, { send = "HTTP/1.0 400 Bad Request\r\n\r\n" } })
      assert.equal("connect", info.kind)
      assert.matches("not a SOCKS5 proxy", err, 1, true)
    end)

    it("a reply cut short by the proxy closing", function()
      local err, info = failing({ D, { send = "\5\0" }, D, { send = "\5\0\0\1\127" }, { close = true } })
      assert.equal("connect", info.kind)
      assert.matches("lost waiting for the SOCKS5 reply to CONNECT", err, 1, true)
    end)

    it("a silent proxy times out within `timeout`", function()
      local err, info, took = failing({ { sleep = 4 } }, nil, { timeout = 0.5 })
      assert.equal("timeout", info.kind)
      assert.equal("connect", info.stage)
      assert.matches("timed out", err, 1, true)
      assert.is_true(took < 2, "took " .. took)
    end)


    it("bytes behind the proxy's reply under implicit TLS are refused", function()
      local err, info = failing({ D, { send = "\5\0" }, D, { send = SOCKS_OK .. "junk" } }, nil,
        { tls = "implicit", verify = false })
      assert.equal("protocol", info.kind)
      assert.matches("before the TLS handshake", err, 1, true)
    end)

    it("the proxy's port closed: a connect failure naming the proxy", function()
      local port = servers.free_port()
      local _, err, info = smtp.send(message{ host = "127.0.0.1", port = 2525,
        proxy = "socks5://127.0.0.1:" .. port })
      assert.equal("connect", info.kind)
      assert.equal("connect", info.stage)
      assert.equal("socks5", info.proxy)
      assert.matches("proxy socks5 127.0.0.1:" .. port, err, 1, true)
    end)
  end)

  describe("a scripted HTTP proxy", function()
    it("CONNECT with Proxy-Authorization; the greeting may come with the 200", function()
      local srv = fake(concat({ D, { send = "HTTP/1.1 200 Connection established\r\nX: y\r\n\r\n220 fake\r\n" } },
        SMTP_AFTER))
      local s, err = smtp.connect{ host = "mx.example.test", port = 25, tls = "none", helo = HELO, timeout = 5,
        proxy = "http://ann:p%40ss@127.0.0.1:" .. srv.port }
      assert.is_table(s, err)
      s:quit()
      srv:wait(5)
      local want = "CONNECT mx.example.test:25 HTTP/1.1\r\nHost: mx.example.test:25\r\n" ..
        "Proxy-Authorization: Basic YW5uOnBAc3M=\r\n\r\nEHLO client.example\r\n"
      assert.equal(want, srv:received():sub(1, #want))
    end)

    it("an IPv6 address in brackets", function()
      local srv = fake(concat({ D, { send = "HTTP/1.0 200 OK\r\n\r\n" }, { send = "220 fake\r\n" } }, SMTP_AFTER))
      local s, err = smtp.connect{ host = "::1", port = 25, tls = "none", helo = HELO, timeout = 5,
        proxy = "http://127.0.0.1:" .. srv.port }
      assert.is_table(s, err)
      s:quit()
      srv:wait(5)
      assert.matches("^CONNECT %[::1%]:25 HTTP/1.1\r\nHost: %[::1%]:25\r\n\r\n", srv:received())
    end)

    it("a non-2xx reply: its status line in the error", function()
      local srv = fake({ D, { send = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n" } })
      local _, err, info = smtp.send(message{ host = "127.0.0.1", port = 2525,
        proxy = "http://127.0.0.1:" .. srv.port })
      assert.equal("connect", info.kind)
      assert.equal("http", info.proxy)
      assert.equal(502, info.proxy_status)
      assert.is_true(info.temporary)
      assert.matches("tunnel to 127.0.0.1:2525: refused CONNECT: HTTP/1.1 502 Bad Gateway", err, 1, true)
    end)

    it("reply headers over 8 KiB", function()
      local pad = string.rep("X-Pad: " .. string.rep("a", 90) .. "\r\n", 100)
      local srv = fake({ D, { send = "HTTP/1.1 200 OK\r\n" .. pad } })
      local _, err, info = smtp.send(message{ host = "127.0.0.1", port = 2525,
        proxy = "http://127.0.0.1:" .. srv.port })
      assert.equal("connect", info.kind)
      assert.matches("longer than 8192 octets", err, 1, true)
    end)

    it("not HTTP", function()
      local srv = fake({ D, { send = "\5\0garbage\r\n\r\n" } })
      local _, err, info = smtp.send(message{ host = "127.0.0.1", port = 2525,
        proxy = "http://127.0.0.1:" .. srv.port })
      assert.equal("connect", info.kind)
      assert.matches("not an HTTP reply to CONNECT", err, 1, true)
    end)

    it("a proxy trickling its headers is bounded by `timeout` for the whole handshake", function()
      -- each octet comes well within the 0.8 s of one wait; the whole would take 6 s
      local srv = fake({ D, { send = "HTTP/1.1 200 OK\r\n" }, { trickle = string.rep("X", 60), interval = 0.1 } })
      local t0 = socket.gettime()
      local _, err, info = smtp.send(message{ host = "127.0.0.1", port = 2525, timeout = 0.8,
        proxy = "http://127.0.0.1:" .. srv.port })
      local took = socket.gettime() - t0
      assert.equal("timeout", info.kind, err)
      assert.equal("connect", info.stage)
      assert.equal("http", info.proxy)
      -- under 4 s: well short of the 6 s the whole trickle takes, with room for a loaded machine
      assert.is_true(took >= 0.7 and took < 4, "took " .. took)
    end)

    it("truncated: the proxy closes inside its headers", function()
      local srv = fake({ D, { send = "HTTP/1.1 200 OK\r\nX-A: b" }, { close = true } })
      local _, err, info = smtp.send(message{ host = "127.0.0.1", port = 2525,
        proxy = "http://127.0.0.1:" .. srv.port })
      assert.equal("connect", info.kind)
      assert.matches("lost waiting for the HTTP proxy's reply", err, 1, true)
    end)
  end)

  describe("through Dante #dante", function()
    if not proxies.have_dante then
      it("needs dante-server", function() pending("danted is not installed (apt-get install dante-server)") end)
      return
    end
    local dbg
    before_each(function() dbg = servers.debug_server{} end)

    it("socks5: the message arrives", function()
      local d = proxies.dante{}
      finally(function() d:stop() end)
      local res, err = smtp.send(message{ host = "127.0.0.1", port = dbg.port,
        proxy = "socks5://127.0.0.1:" .. d.port })
      assert.is_table(res, err)
      assert.equal(250, res.code)
      -- the send report names the proxy it went through, not as the server
      assert.equal("127.0.0.1", res.session.proxy)
      assert.is_nil(res.session.address)
      assert.equal(dbg.port, res.session.port)
      local out = wait_messages(dbg, 1)
      assert.matches("mail from: <" .. FROM .. ">", out, 1, true)
      assert.matches("through the tunnel", out, 1, true)
      assert.matches("-> [%d.]+ 127%.0%.0%.1%." .. dbg.port .. "%f[^%d]", d:log())
    end)

    it("socks5h: Dante resolves localhost", function()
      local d = proxies.dante{}
      finally(function() d:stop() end)
      local lines, trace = recorder()
      local res, err = smtp.send(message{ host = "localhost", port = dbg.port, debug = trace,
        proxy = "socks5h://127.0.0.1:" .. d.port })
      assert.is_table(res, err)
      assert.truthy(find_line(lines, "(the proxy resolves the name)", true))
      assert.matches("through the tunnel", wait_messages(dbg, 1), 1, true)
    end)

    it("socks5 with a name: the client resolves it and tries its addresses in turn", function()
      local d = proxies.dante{}
      finally(function() d:stop() end)
      local lines, trace = recorder()
      local res, err = smtp.send(message{ host = "localhost", port = dbg.port, debug = trace,
        proxy = "socks5://127.0.0.1:" .. d.port })
      assert.is_table(res, err)
      local _, open = find_line(lines, "^proxy: tunnel to ")
      assert.matches("^proxy: tunnel to [%d%.%[%]:]+:" .. dbg.port .. " open$", open)
      assert.matches("through the tunnel", wait_messages(dbg, 1), 1, true)
    end)

    it("socks5h: a name Dante cannot resolve is a connect failure", function()
      local d = proxies.dante{}
      finally(function() d:stop() end)
      local _, err, info = smtp.send(message{ host = "no-such-host.invalid", port = dbg.port,
        proxy = "socks5h://127.0.0.1:" .. d.port })
      assert.equal("connect", info.kind)
      assert.equal("socks5h", info.proxy)
      assert.matches("SOCKS5 reply %d", err)
    end)

    it("a destination the rules refuse: 'connection not allowed by ruleset'", function()
      local d = proxies.dante{ refuse = dbg.port }
      finally(function() d:stop() end)
      local _, err, info = smtp.send(message{ host = "127.0.0.1", port = dbg.port,
        proxy = "socks5://127.0.0.1:" .. d.port })
      assert.equal("connect", info.kind)
      assert.equal(2, info.proxy_status)
      assert.matches("connection not allowed by ruleset (SOCKS5 reply 2)", err, 1, true)
    end)

    it("a closed port behind the proxy: 'connection refused'", function()
      local d = proxies.dante{}
      finally(function() d:stop() end)
      local _, err, info = smtp.send(message{ host = "127.0.0.1", port = servers.free_port(),
        proxy = "socks5://127.0.0.1:" .. d.port })
      assert.equal("connect", info.kind)
      assert.matches("SOCKS5 reply", err, 1, true)
      assert.is_true(info.temporary)
    end)

    describe("with the username method", function()
      local USER, PASS = "luasmtp-proxy", "pa:ss@w%rd"
      local made, why
      setup(function()
        made, why = proxies.add_user(USER, PASS)
      end)
      teardown(function()
        if made then proxies.del_user(USER) end
      end)

      local function url(pass, port)
        return "socks5://" .. USER .. ":" .. pass:gsub("[:@%%]", function(c)
          return string.format("%%%02X", c:byte())
        end) .. "@127.0.0.1:" .. port
      end

      it("the right password: the message arrives", function()
        if not made then return pending(why) end
        local d = proxies.dante{ user = USER }
        finally(function() d:stop() end)
        local res, err = smtp.send(message{ host = "127.0.0.1", port = dbg.port, proxy = url(PASS, d.port) })
        assert.is_table(res, err)
        assert.matches("through the tunnel", wait_messages(dbg, 1), 1, true)
      end)

      it("a wrong password: connect, authentication failed", function()
        if not made then return pending(why) end
        local d = proxies.dante{ user = USER }
        finally(function() d:stop() end)
        local _, err, info = smtp.send(message{ host = "127.0.0.1", port = dbg.port,
          proxy = url("wrong", d.port) })
        assert.equal("connect", info.kind)
        assert.is_false(info.temporary)
        assert.matches("authentication failed", err, 1, true)
      end)

      it("no credentials: the proxy accepts none of the methods offered", function()
        if not made then return pending(why) end
        local d = proxies.dante{ user = USER }
        finally(function() d:stop() end)
        local _, err, info = smtp.send(message{ host = "127.0.0.1", port = dbg.port,
          proxy = "socks5://127.0.0.1:" .. d.port })
        assert.equal("connect", info.kind)
        assert.matches("accepts none of the authentication methods", err, 1, true)
      end)
    end)
  end)

  describe("through tinyproxy #tinyproxy", function()
    if not proxies.have_tinyproxy then
      it("needs tinyproxy", function() pending("tinyproxy is not installed (apt-get install tinyproxy)") end)
      return
    end
    local dbg
    before_each(function() dbg = servers.debug_server{} end)

    it("CONNECT: the message arrives", function()
      local t = proxies.tinyproxy{ ports = { dbg.port } }
      finally(function() t:stop() end)
      local lines, trace = recorder()
      local res, err = smtp.send(message{ host = "127.0.0.1", port = dbg.port, debug = trace,
        proxy = "http://127.0.0.1:" .. t.port })
      assert.is_table(res, err)
      assert.matches("through the tunnel", wait_messages(dbg, 1), 1, true)
      assert.truthy(find_line(lines, "proxy: via http 127.0.0.1:" .. t.port, true))
    end)

    it("BasicAuth: the right password passes, a wrong one is a connect failure (407/401)", function()
      local t = proxies.tinyproxy{ ports = { dbg.port }, user = "ann", password = "s3cret" }
      finally(function() t:stop() end)
      local res, err = smtp.send(message{ host = "127.0.0.1", port = dbg.port,
        proxy = "http://ann:s3cret@127.0.0.1:" .. t.port })
      assert.is_table(res, err)
      local info
      res, err, info = smtp.send(message{ host = "127.0.0.1", port = dbg.port,
        proxy = "http://ann:wrong@127.0.0.1:" .. t.port })
      assert.is_nil(res)
      assert.equal("connect", info.kind)
      -- 407 (RFC 9110); tinyproxy 1.11 says 401
      assert.is_true(info.proxy_status == 407 or info.proxy_status == 401, tostring(info.proxy_status))
      assert.matches("authentication failed", err, 1, true)
      assert.is_nil(err:find("wrong", 1, true))
    end)

    it("a port outside ConnectPort: refused with the proxy's status line", function()
      local t = proxies.tinyproxy{ ports = { 25 } }
      finally(function() t:stop() end)
      local _, err, info = smtp.send(message{ host = "127.0.0.1", port = dbg.port,
        proxy = "http://127.0.0.1:" .. t.port })
      assert.equal("connect", info.kind)
      assert.equal(403, info.proxy_status)
      assert.matches("tunnel to 127.0.0.1:" .. dbg.port .. ": refused CONNECT: HTTP/1.%d 403", err)
    end)
  end)

  describe("inside nginx (cosockets) #resty", function()
    local nginx = require "spec.support.nginx"
    local available, why = nginx.available()
    if not available then
      it("needs nginx with the Lua module", function() pending("skipped: " .. tostring(why)) end)
      return
    end
    local function q(v)
      return (tostring(v):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
    end
    local ngx_srv, dbg
    setup(function()
      ngx_srv = nginx.start{}
    end)
    teardown(function()
      if ngx_srv then ngx_srv:stop() end
      nginx.stop_all()
    end)
    before_each(function() dbg = servers.debug_server{} end)

    local function send(args)
      local parts = {}
      for k, v in pairs(args) do parts[#parts + 1] = k .. "=" .. q(v) end
      local status, body = ngx_srv:get("/send?" .. table.concat(parts, "&"))
      assert.equal(200, status)
      assert.matches("transport=cosocket", body, 1, true)
      return body
    end

    it("socks5 and socks5h through Dante: the messages arrive", function()
      if not proxies.have_dante then return pending("danted is not installed") end
      local d = proxies.dante{}
      finally(function() d:stop() end)
      local body = send{ host = "127.0.0.1", port = dbg.port, subject = "nginx socks5",
        proxy = "socks5://127.0.0.1:" .. d.port }
      assert.matches("^ok 250 ", body)
      body = send{ host = "localhost", port = dbg.port, subject = "nginx socks5h",
        proxy = "socks5h://127.0.0.1:" .. d.port }
      assert.matches("^ok 250 ", body)
      local out = wait_messages(dbg, 2)
      assert.matches("Subject: nginx socks5\n", out:gsub("\r", ""), 1, true)
      assert.matches("Subject: nginx socks5h", out, 1, true)
    end)

    it("socks5 with a host name nginx cannot resolve itself: an argument failure", function()
      local body = send{ host = "mx.example.test", port = 25, proxy = "socks5://127.0.0.1:1" }
      assert.matches("kind=argument stage=connect", body, 1, true)
      assert.matches("socks5h://", body, 1, true)
    end)

    it("a pooled tunnel: the second session resumes it, no second CONNECT", function()
      if not proxies.have_tinyproxy then return pending("tinyproxy is not installed") end
      local function txn(n)
        return { expect = "^MAIL FROM:<a@example.com>" }, { send = "250 ok\r\n" },
          { expect = "^RCPT TO:<b@example.org>" }, { send = "250 ok\r\n" },
          { expect = "^DATA" }, { send = "354 go\r\n" }, { read = "data" },
          { send = "250 queued " .. n .. "\r\n" }, { expect = "^RSET" }, { send = "250 ok\r\n" }
      end
      -- one connection only: a client that reconnected would find no server
      local steps = { { send = "220 fake ESMTP\r\n" }, { expect = "^EHLO pool.test" },
        { send = "250-fake.test\r\n250 8BITMIME\r\n" } }
      for n = 1, 2 do
        for _, st in ipairs({ txn(n) }) do steps[#steps + 1] = st end
      end
      local srv = servers.fake{ steps = steps, timeout = 6 }
      local t = proxies.tinyproxy{ ports = { srv.port } }
      finally(function() t:stop() end)
      local status, body = ngx_srv:get("/session_pool?port=" .. srv.port .. "&proxy=" ..
        q("http://127.0.0.1:" .. t.port))
      assert.equal(200, status)
      assert.equal("send1=250 reused1=false keepalive1=true send2=250 reused2=true keepalive2=true\n", body)
      local _, connects = t:log():gsub("Request %(file descriptor %d+%): CONNECT", "")
      assert.equal(1, connects)
      assert.is_nil(srv:errors():find("MISMATCH", 1, true), srv:errors())
    end)

    it("http through tinyproxy: the message arrives; a refused port is a connect failure", function()
      if not proxies.have_tinyproxy then return pending("tinyproxy is not installed") end
      local t = proxies.tinyproxy{ ports = { dbg.port }, user = "ann", password = "s3cret" }
      finally(function() t:stop() end)
      local body = send{ host = "127.0.0.1", port = dbg.port, subject = "nginx http",
        proxy = "http://ann:s3cret@127.0.0.1:" .. t.port }
      assert.matches("^ok 250 ", body)
      assert.matches("Subject: nginx http", wait_messages(dbg, 1), 1, true)
      body = send{ host = "127.0.0.1", port = dbg.port + 1 == t.port and dbg.port + 2 or dbg.port + 1,
        proxy = "http://ann:s3cret@127.0.0.1:" .. t.port }
      assert.matches("kind=connect stage=connect", body, 1, true)
      assert.matches("HTTP/1.%d 403", body)
    end)
  end)

  describe("TLS end to end through the tunnel #tls", function()
    local have_ssl = pcall(require, "ssl")
    local C, tmp
    setup(function()
      if have_ssl and certs.available() then
        tmp = (io.popen("mktemp -d /tmp/lua-smtp-ptls.XXXXXX"):read("*l"))
        C = certs.make(tmp .. "/certs")
      end
    end)
    teardown(function()
      if tmp then os.execute("rm -rf '" .. tmp .. "'") end
    end)

    -- A fake mail server with STARTTLS (or implicit TLS) and a certificate
    -- for wrong.example only (not for 127.0.0.1, the proxy's address).
    local function tls_server(implicit)
      local steps = {
        { send = "220 fake.test ESMTP\r\n" },
        { expect = "^EHLO " }, { send = "250-fake.test\r\n250 STARTTLS\r\n" },
        { expect = "^STARTTLS$" }, { send = "220 go ahead\r\n" }, { starttls = true },
      }
      if implicit then steps = { { send = "220 fake.test ESMTP\r\n" } } end
      for _, st in ipairs({ { expect = "^EHLO " }, { send = "250 fake.test over TLS\r\n" },
          { expect = "^QUIT$" }, { send = "221 bye\r\n" } }) do
        steps[#steps + 1] = st
      end
      return servers.fake{ steps = steps, implicit_tls = implicit or nil, timeout = 10,
        tls = { cert = C.wronghost, key = C.wronghost_key } }
    end

    local kinds = {}
    if proxies.have_dante then kinds[#kinds + 1] = "socks5" end
    if proxies.have_tinyproxy then kinds[#kinds + 1] = "http" end
    if #kinds == 0 then
      it("needs dante-server or tinyproxy", function() pending("no real proxy installed") end)
    end
    for _, kind in ipairs(kinds) do
      local function start(port)
        if kind == "socks5" then return proxies.dante{}, "socks5://127.0.0.1:" end
        return proxies.tinyproxy{ ports = { port } }, "http://127.0.0.1:"
      end
      for _, implicit in ipairs({ false, true }) do
        local mode = implicit and "implicit" or "starttls"
        it(kind .. ", " .. mode .. ": verifies the mail server's name, not the proxy's", function()
          if not C then return pending("LuaSec or openssl is missing") end
          local srv = tls_server(implicit)
          local p, prefix = start(srv.port)
          finally(function() p:stop() end)
          local lines, trace = recorder()
          local s, err = smtp.connect{ host = "127.0.0.1", port = srv.port, servername = "wrong.example",
            tls = mode, cafile = C.ca, helo = HELO, timeout = 5, debug = trace, proxy = prefix .. p.port }
          assert.is_table(s, err)
          assert.is_true(s.tls)
          s:quit()
          assert.truthy(find_line(lines, "verifying the certificate for wrong.example", true))
          assert.matches("TLS: handshake ok", srv:errors(), 1, true)
          -- and the connection went through the proxy: its log names the server's port
          assert.matches("127%.0%.0%.1[.:]" .. srv.port .. "%f[^%d]", p:log())
        end)

        it(kind .. ", " .. mode .. ": the proxy's address does not pass for the mail server's name", function()
          if not C then return pending("LuaSec or openssl is missing") end
          local srv = tls_server(implicit)
          local p, prefix = start(srv.port)
          finally(function() p:stop() end)
          local s, err, info = smtp.connect{ host = "127.0.0.1", port = srv.port, tls = mode, cafile = C.ca,
            helo = HELO, timeout = 5, proxy = prefix .. p.port }
          assert.is_nil(s)
          assert.equal("tls", info.kind)
          assert.matches("mismatch", err, 1, true)
        end)
      end
    end
  end)

  -- The proxy path where the extensions really live together: the private
  -- Postfix offers PIPELINING, CHUNKING, STARTTLS and (on its submission
  -- port, after STARTTLS) AUTH from Dovecot. What arrives is read back
  -- from Postfix's delivery files and compared with what was sent.
  describe("into the private Postfix (PIPELINING, CHUNKING, STARTTLS, AUTH) #postfix", function()
    local USER, PASS = "proxied", "pr0xy secret"
    local need_postfix, stop_postfix = postfix.shared{ users = { { USER, PASS } } }
    local pf
    teardown(stop_postfix)
    local function need(have, what)
      if not have then pending(what .. " is not installed") return false end
      pf = need_postfix(pending)
      return pf ~= nil
    end

    local BODIES = { ".a leading dot\r\n..two\r\n.\r\nend\r\n", "second message\r\n",
                     ("a line of the third message, ~78 KB in all\r\n"):rep(1800) }

    local function check_delivered(n)
      local got = pf:by_subject("proxied ", n)
      for i = 1, n do
        local m = got["proxied " .. i]
        assert.is_table(m, "message " .. i .. " missing")
        assert.equal("rcpt" .. i .. "@example.net", m.recipient)
        -- delivered with LF line ends (pipe(8)); the body exactly as sent
        assert.equal(BODIES[i]:gsub("\r\n", "\n"), m.content:match("\n\n(.*)$"))
      end
    end

    local function batch()
      local list = {}
      for i, body in ipairs(BODIES) do
        list[i] = { envelope = { from = FROM, to = { "rcpt" .. i .. "@example.net" } },
                    message = "From: <" .. FROM .. ">\r\nSubject: proxied " .. i .. "\r\n\r\n" .. body }
      end
      return list
    end

    it("socks5h through Dante to the submission port: STARTTLS, AUTH, pipelined BDAT, every message intact",
      function()
      if not need(proxies.have_dante, "dante-server") then return end
      local d = proxies.dante{}
      finally(function() d:stop() end)
      local lines, trace = recorder()
      local s, err = smtp.connect{ host = "localhost", port = pf.ports.submission, tls = "starttls",
        cafile = pf.certs.ca, user = USER, password = PASS, helo = HELO, timeout = 10, debug = trace,
        proxy = "socks5h://127.0.0.1:" .. d.port }
      assert.is_table(s, err)
      assert.is_true(s.tls)
      assert.is_string(s.authenticated)
      assert.truthy(s.capabilities.PIPELINING and s.capabilities.CHUNKING)
      local results = s:send_many(batch())
      s:quit()
      for i = 1, #BODIES do
        assert.equal(250, results[i].code, tostring(results[i].error))
        -- the report names the proxy, not the server's address
        assert.equal("127.0.0.1", results[i].session.proxy)
        assert.is_nil(results[i].session.address)
      end
      local last_chunks, data = servers.last_chunks_and_data(lines)
      assert.equal(#BODIES, last_chunks)
      assert.equal(0, data, "no DATA on the CHUNKING path")
      assert.is_true(servers.pipelined(lines), "MAIL+RCPT, BDAT LAST+MAIL written together")
      assert.truthy(find_line(lines, "send: 'STARTTLS", true))
      assert.truthy(find_line(lines, "reply: b'235 ", true))
      check_delivered(#BODIES)
    end)

    it("HTTP CONNECT through tinyproxy to the plain port: STARTTLS, then pipelined BDAT", function()
      if not need(proxies.have_tinyproxy, "tinyproxy") then return end
      local t = proxies.tinyproxy{ ports = { pf.ports.plain } }
      finally(function() t:stop() end)
      local lines, trace = recorder()
      local s, err = smtp.connect{ host = "localhost", port = pf.ports.plain, tls = "starttls",
        cafile = pf.certs.ca, helo = HELO, timeout = 10, debug = trace,
        proxy = "http://127.0.0.1:" .. t.port }
      assert.is_table(s, err)
      assert.is_true(s.tls)
      local results = s:send_many(batch())
      s:quit()
      for i = 1, #BODIES do assert.equal(250, results[i].code, tostring(results[i].error)) end
      local last_chunks, data = servers.last_chunks_and_data(lines)
      assert.equal(#BODIES, last_chunks)
      assert.equal(0, data, "no DATA on the CHUNKING path")
      assert.is_true(servers.pipelined(lines), "MAIL+RCPT, BDAT LAST+MAIL written together")
      assert.equal("127.0.0.1", results[1].session.proxy)
      check_delivered(#BODIES)
    end)
  end)
end)
