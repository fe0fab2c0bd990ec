-- The specs of the event-loop transports (spec/copas_spec.lua,
-- spec/cqueues_spec.lua), one set for both:
--
--   require("spec.support.evloop").describe("copas", {
--     describe = describe, it = it, pending = pending, setup = setup,
--     teardown = teardown, assert = assert })
--
-- (busted's functions live in the spec file's environment, not in _G.)
-- Each send runs in a thread of the loop (copas.addthread, cq:wrap); the
-- loop is stepped at most every 50 ms and for a bounded time. Servers:
-- spec/support/slow_server.lua (concurrent, every reply late; TLS with the
-- private test CA of spec/support/certs.lua), the scriptable fake server,
-- and a listening socket that never answers. Hostile servers and bad
-- certificates are met by the blocking C transport first, in the same
-- spec, and the event-loop transport must fail the same way: same kind,
-- same stage, same text. Timings go to stderr ("# ...").
-- Works with Lua 5.1 .. 5.4.
local socket = require "socket"
local servers = require "spec.support.servers"
local nginx = require "spec.support.nginx"
local certs = require "spec.support.certs"
local postfix = require "spec.support.postfix"

local recorder, find_line = servers.recorder, servers.find_line

local M = {}

local FROM, TO = "loop@example.com", "rcpt@example.org"

local function interp()
  return rawget(_G, "jit") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
end

-- name -> a loop driver { spawn(fn), run(seconds) -> all done }, or nil
-- and why not.
local drivers = {}

function drivers.copas()
  local ok, copas = pcall(require, "copas")
  if not ok then
    return nil, "copas is not installed for " .. interp() .. " (Debian's lua-copas is for Lua 5.1 and 5.2:" ..
      " lua5.1 /usr/bin/busted spec/copas_spec.lua)"
  end
  -- copas threads are coroutines: on Lua 5.1 a pcall cannot be yielded
  -- across, coxpcall's can (copas depends on it).
  local has_cox, cox = pcall(require, "coxpcall")
  local protect = has_cox and cox.pcall or pcall
  local d = { pending = 0, errors = {} }
  function d.spawn(fn)
    d.pending = d.pending + 1
    copas.addthread(function()
      local fine, err = protect(fn)
      if not fine then d.errors[#d.errors + 1] = tostring(err) end
      d.pending = d.pending - 1
    end)
  end
  function d.run(limit)
    local stop = socket.gettime() + limit
    while d.pending > 0 and socket.gettime() < stop do copas.step(0.05) end
    assert(#d.errors == 0, table.concat(d.errors, "\n"))
    return d.pending == 0
  end
  return d
end

function drivers.cqueues()
  local ok, cqueues = pcall(require, "cqueues")
  if not ok then
    return nil, "cqueues is not installed for " .. interp() .. " (Debian's lua-cqueues: Lua 5.1 to 5.4)"
  end
  local cq = cqueues.new()
  local d = { pending = 0, errors = {} }
  function d.spawn(fn)
    d.pending = d.pending + 1
    -- an error in the thread comes out of cq:step (no pcall: Lua 5.1
    -- cannot yield across one)
    cq:wrap(function()
      fn()
      d.pending = d.pending - 1
    end)
  end
  function d.run(limit)
    local stop = socket.gettime() + limit
    while d.pending > 0 and socket.gettime() < stop do
      local fine, err = cq:step(0.05)
      if not fine then error(err) end
    end
    assert(#d.errors == 0, table.concat(d.errors, "\n"))
    return d.pending == 0
  end
  return d
end

-- A listening socket that never accepts: the kernel completes the
-- connection, nobody ever says a word.
local function silent_listener()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  return s, tonumber(port)
end

local function message(extra)
  local m = { from = FROM, to = TO, subject = "loop", text = "hello\n", helo = "client.example", timeout = 5 }
  for k, v in pairs(extra or {}) do m[k] = v end
  return m
end

-- One smtp.send through the transport, in a thread of a fresh loop:
-- res, err, info, seconds.
local function send_in_loop(name, opts)
  local d = assert(drivers[name]())
  local out
  d.spawn(function()
    local t0 = socket.gettime()
    local res, err, info = require("smtp").send(opts)
    out = { res, err, info, socket.gettime() - t0 }
  end)
  assert(d.run(30), "the loop did not finish")
  return out[1], out[2], out[3], out[4]
end

function M.describe(name, env)
  local describe, it, pending, setup, teardown, assert = env.describe, env.it, env.pending, env.setup,
    env.teardown, env.assert
  local smtp = require "smtp"
  local tag = "#" .. name
  describe("transport = \"" .. name .. "\" " .. tag, function()
    local probe, why = drivers[name]()
    if not probe then
      it("needs " .. name, function() pending(why) end)
      return
    end

    local slow, tmp, C
    setup(function()
      slow = nginx.slow_server{ delay = 0.2, max_time = 120 }
    end)
    teardown(function()
      if slow then slow:stop() end
      servers.stop_all()
      nginx.stop_all()
      if tmp then os.execute("rm -rf '" .. tmp .. "'") end
    end)

    local function pki()
      if not C then
        local p = assert(io.popen("mktemp -d /tmp/lua-smtp-evloop.XXXXXX"))
        tmp = p:read("*l")
        p:close()
        C = certs.make(tmp .. "/certs")
      end
      return C
    end

    it("50 concurrent sends to a server that delays each reply by 200 ms take well under serial time", function()
      -- one session alone, through the same transport: 7 replies x 0.2 s
      local res, err, _, single = send_in_loop(name, message{ transport = name, host = "127.0.0.1",
        port = slow.port, tls = "none", subject = "single" })
      assert.is_table(res, err)
      assert.is_true(single >= 1.2, "one session should take at least 7 x 0.2 s, took " .. single)

      local d = drivers[name]()
      local results = {}
      local t0 = socket.gettime()
      for i = 1, 50 do
        d.spawn(function()
          local r, e = smtp.send(message{ transport = name, host = "127.0.0.1", port = slow.port, tls = "none",
            subject = "concurrent " .. i, timeout = 30 })
          results[i] = r or e
        end)
      end
      assert.is_true(d.run(60), "the loop did not finish in 60 s")
      local elapsed = socket.gettime() - t0
      local serial = 50 * single
      io.stderr:write(string.format("# %s (%s): 1 session %.2f s; 50 concurrent sessions %.2f s" ..
        " (serial would be %.1f s, %.0fx faster)\n", name, interp(), single, elapsed, serial, serial / elapsed))
      for i = 1, 50 do
        assert.is_table(results[i], "send " .. i .. ": " .. tostring(results[i]))
        assert.equal(250, results[i].code)
      end
      assert.is_true(elapsed < serial / 5, string.format("50 sessions took %.2f s, serial %.1f s", elapsed, serial))
      local got = {}
      for _, m in ipairs(slow:messages()) do got[m.subject] = true end
      for i = 1, 50 do assert.is_true(got["concurrent " .. i], "message " .. i .. " missing at the server") end
    end)

    it("a timeout in one thread leaves the others alone", function()
      local silent, sport = silent_listener()
      local d = drivers[name]()
      local t0 = socket.gettime()
      local timed, others, done_at = nil, {}, {}
      d.spawn(function()
        local r, e, info = smtp.send(message{ transport = name, host = "127.0.0.1", port = sport, tls = "none",
          timeout = 0.5 })
        timed = { r, e, info, socket.gettime() - t0 }
      end)
      for i = 1, 5 do
        d.spawn(function()
          local r, e = smtp.send(message{ transport = name, host = "127.0.0.1", port = slow.port, tls = "none",
            subject = "beside a timeout " .. i })
          others[i] = r or e
          done_at[i] = socket.gettime() - t0
        end)
      end
      local finished = d.run(20)
      silent:close()
      assert.is_true(finished, "the loop did not finish")
      assert.is_nil(timed[1])
      assert.equal("timeout", timed[3].kind)
      assert.equal("greeting", timed[3].stage)
      assert.is_true(timed[3].temporary)
      assert.equal("timeout: timed out waiting for data (waiting for the reply to greeting)", timed[2])
      assert.is_true(timed[4] >= 0.45 and timed[4] < 1.2, "timed out after " .. timed[4] .. " s")
      for i = 1, 5 do
        assert.is_table(others[i], tostring(others[i]))
        -- the timeout came first, the others went on at their own pace
        assert.is_true(done_at[i] > timed[4], "send " .. i .. " done before the timeout")
        assert.is_true(done_at[i] < 4, "send " .. i .. " took " .. done_at[i] .. " s")
      end
      local last = 0
      for i = 1, 5 do last = math.max(last, done_at[i]) end
      io.stderr:write(string.format("# %s (%s): timeout after %.2f s; the 5 others done by %.2f s\n", name,
        interp(), timed[4], last))
    end)

    if name == "copas" then
      it("with a copas that has timers, a timeout fires although the loop waits without a timeout", function()
        local copas = require "copas"
        if not (copas.sleep and copas.wakeup) then
          pending("this copas (" .. tostring(copas._VERSION) .. ") has no timers (copas.sleep, copas.wakeup):" ..
            " its timeouts fire at the loop's next turn")
          return
        end
        local silent, sport = silent_listener()
        local t0, timed = socket.gettime(), nil
        copas.addthread(function()
          local r, e, info = smtp.send(message{ transport = name, host = "127.0.0.1", port = sport, tls = "none",
            timeout = 0.5 })
          timed = { r, e, info, socket.gettime() - t0 }
        end)
        -- The loop's only other timer, so that a broken watchdog shows as a
        -- late timeout rather than a hang.
        copas.addthread(function() copas.sleep(3) end)
        while not timed and socket.gettime() - t0 < 10 do copas.step() end
        silent:close()
        assert.is_table(timed, "no result")
        assert.equal("timeout", timed[3].kind, timed[2])
        assert.is_true(timed[4] >= 0.45 and timed[4] < 1.2, "timed out after " .. timed[4] .. " s")
      end)
    end

    it("stops at the deadline although each reply comes within the timeout", function()
      local res, err, info, took = send_in_loop(name, message{ transport = name, host = "127.0.0.1",
        port = slow.port, tls = "none", timeout = 5, deadline = 0.5 })
      assert.is_nil(res)
      assert.equal("timeout", info.kind, err)
      assert.is_true(took >= 0.45 and took < 1.2, "took " .. took .. " s")
    end)

    -- Hostile servers: the blocking C transport first, then this one, on
    -- the same script (the fake server serves the two connections in turn).
    local GREET = { send = "220 fake.test ESMTP\r\n" }
    local EHLO = { expect = "^EHLO client.example" }
    local CAPS = { send = "250-fake.test\r\n250 8BITMIME\r\n" }
    local hostile = {
      { what = "a garbled reply to EHLO", kind = "protocol", stage = "hello",
        steps = { GREET, EHLO, { send = "garbage without a code\r\n" } } },
      { what = "a close before the reply to RCPT", kind = "closed", stage = "rcpt",
        steps = { GREET, EHLO, CAPS, { expect = "^MAIL" }, { send = "250 ok\r\n" }, { expect = "^RCPT" },
                  { close = true } } },
      { what = "a close after the end of data", kind = "closed", stage = "data_end",
        steps = { GREET, EHLO, CAPS, { expect = "^MAIL" }, { send = "250 ok\r\n" }, { expect = "^RCPT" },
                  { send = "250 ok\r\n" }, { expect = "^DATA" }, { send = "354 go\r\n" }, { read = "data" },
                  { close = true } } },
      { what = "a 421 to MAIL", kind = "closed", stage = "mail",
        steps = { GREET, EHLO, CAPS, { expect = "^MAIL" }, { send = "421 4.3.2 shutting down\r\n" },
                  { close = true } } },
    }
    for _, case in ipairs(hostile) do
      local title = case.what .. ": kind " .. case.kind .. ", stage " .. case.stage ..
        ", as with the blocking transport"
      it(title, function()
        local srv = servers.fake{ steps = case.steps, connections = 2, timeout = 20 }
        local opts = message{ host = "127.0.0.1", port = srv.port, tls = "none" }
        local r1, e1, i1 = smtp.send(opts)
        opts.transport = name
        local r2, e2, i2 = send_in_loop(name, opts)
        srv:stop()
        assert.is_nil(r1)
        assert.is_nil(r2)
        assert.equal(case.kind, i1.kind, e1)
        assert.equal(case.stage, i1.stage, e1)
        assert.equal(e1, e2)
        assert.equal(i1.kind, i2.kind)
        assert.equal(i1.stage, i2.stage)
        assert.equal(i1.temporary, i2.temporary)
        assert.equal(i1.code, i2.code)
      end)
    end

    it("a server that stops reading in the middle of the data: the write times out, as with the blocking" ..
       " transport", function()
      -- one server per transport: the first connection's silence would
      -- delay the second one's greeting
      local function stalling()
        return servers.fake{ timeout = 30, steps = { GREET, EHLO, CAPS,
          { expect = "^MAIL" }, { send = "250 ok\r\n" }, { expect = "^RCPT" }, { send = "250 ok\r\n" },
          { expect = "^DATA" }, { send = "354 go\r\n" }, { sleep = 3 }, { close = true } } }
      end
      local srv, srv2 = stalling(), stalling()
      -- far more than the socket buffers of both ends hold (15 MB), raw:
      -- composing it would take longer than the timeout
      local big = "Subject: big\r\n\r\n" .. string.rep(string.rep("x", 76) .. "\r\n", 200000)
      local opts = message{ host = "127.0.0.1", port = srv.port, tls = "none", timeout = 0.5, message = big,
        envelope = { from = FROM, to = TO } }
      opts.from, opts.to, opts.subject, opts.text = nil, nil, nil, nil
      local t0 = socket.gettime()
      local r1, e1, i1 = smtp.send(opts)
      local blocking = socket.gettime() - t0
      opts.transport, opts.port = name, srv2.port
      local r2, e2, i2, took = send_in_loop(name, opts)
      srv:stop()
      srv2:stop()
      assert.is_nil(r1)
      assert.is_nil(r2)
      assert.equal("timeout", i1.kind, e1)
      assert.equal(e1, e2)
      assert.equal(i1.stage, i2.stage)
      assert.is_true(blocking < 2, "the blocking transport took " .. blocking .. " s")
      assert.is_true(took >= 0.45 and took < 2, "took " .. took .. " s")
    end)

    it("a session (smtp.connect) sends several messages in a thread of the loop", function()
      local d = drivers[name]()
      local out = {}
      d.spawn(function()
        local s, err = smtp.connect{ transport = name, host = "127.0.0.1", port = slow.port, tls = "none",
          helo = "client.example", timeout = 5 }
        assert(s, err)
        for i = 1, 2 do
          local r, e = s:send{ from = FROM, to = TO, subject = "session " .. i, text = "hello\n" }
          out[i] = r or e
        end
        out.results = s:send_many({ { from = FROM, to = TO, subject = "many 1", text = "one\n" },
                                    { from = FROM, to = TO, subject = "many 2", text = "two\n" } })
        s:quit()
      end)
      assert.is_true(d.run(30), "the loop did not finish")
      assert.equal(250, out[1].code, tostring(out[1]))
      assert.equal(250, out[2].code, tostring(out[2]))
      assert.equal(250, out.results[1].code)
      assert.equal(250, out.results[2].code)
    end)

    it("outside the loop: a connect failure that says where it must run", function()
      local r, e, info = smtp.send(message{ transport = name, host = "127.0.0.1", port = slow.port, tls = "none" })
      assert.is_nil(r)
      assert.equal("connect", info.kind)
      assert.matches("transport \"" .. name .. "\" must run ", e, 1, true)
    end)

    it("a refused connection: kind connect, stage connect", function()
      local port = servers.free_port()
      local r, e, info = send_in_loop(name, message{ transport = name, host = "127.0.0.1", port = port,
        tls = "none" })
      assert.is_nil(r)
      assert.equal("connect", info.kind, e)
      assert.equal("connect", info.stage)
      assert.matches("^connect: connect to 127%.0%.0%.1:" .. port .. ": ", e)
    end)

    it("the same timeout text as the blocking transport when the server never answers", function()
      local silent, sport = silent_listener()
      local opts = message{ host = "127.0.0.1", port = sport, tls = "none", timeout = 0.3 }
      local _, e1, i1 = smtp.send(opts)
      opts.transport = name
      local _, e2, i2 = send_in_loop(name, opts)
      silent:close()
      assert.equal("timeout", i1.kind)
      assert.equal(e1, e2)
      assert.equal(i1.stage, i2.stage)
    end)

    -- Where the extensions live together: the private Postfix offers
    -- PIPELINING, CHUNKING and STARTTLS, and AUTH (Dovecot) on its
    -- submission port after STARTTLS. What arrives is read back from
    -- Postfix's delivery files.
    describe("into the private Postfix (PIPELINING, CHUNKING, STARTTLS, AUTH) #postfix", function()
      local USER, PASS = "looped", "l00p secret"
      local need_postfix, stop_postfix = postfix.shared{ users = { { USER, PASS } } }
      local pf
      teardown(stop_postfix)
      local function need()
        pf = need_postfix(pending)
        return pf ~= nil
      end
      local function submission(extra)
        local o = { transport = name, host = "localhost", port = pf.ports.submission, tls = "starttls",
                    cafile = pf.certs.ca, user = USER, password = PASS, helo = "client.example", timeout = 15 }
        for k, v in pairs(extra or {}) do o[k] = v end
        return o
      end
      local function body(i)
        return ".a leading dot " .. i .. "\n..two\n.\n" .. ("filler line of message " .. i .. "\n"):rep(300 * i)
      end

      it("10 concurrent sends over STARTTLS and AUTH, in BDAT chunks, each delivered intact", function()
        if not need() then return end
        local d = drivers[name]()
        local results, transcripts = {}, {}
        for i = 1, 10 do
          d.spawn(function()
            local lines, dbg = recorder()
            transcripts[i] = lines
            local r, e = smtp.send(submission{ from = FROM, to = "loop" .. i .. "@example.net",
              subject = "loop " .. i, text = body(i), debug = dbg })
            results[i] = r or e
          end)
        end
        assert.is_true(d.run(60), "the loop did not finish in 60 s")
        for i = 1, 10 do
          assert.is_table(results[i], "send " .. i .. ": " .. tostring(results[i]))
          assert.equal(250, results[i].code)
          assert.is_true(results[i].session.tls.verified)
          local last_chunks, data = servers.last_chunks_and_data(transcripts[i])
          assert.equal(1, last_chunks)
          assert.equal(0, data, "no DATA on the CHUNKING path")
          assert.truthy(find_line(transcripts[i], "^reply: b'235 "))
        end
        local got = pf:by_subject("loop ", 10)
        for i = 1, 10 do
          local m = got["loop " .. i]
          assert.is_table(m, "message " .. i .. " not delivered")
          assert.equal("loop" .. i .. "@example.net", m.recipient)
          assert.equal(body(i), m.content:match("\n\n(.*)$"))
        end
      end)

      it("a session in a thread: send_many of 3 pipelined over BDAT, each delivered intact", function()
        if not need() then return end
        local d = drivers[name]()
        local lines, dbg = recorder()
        local out = {}
        d.spawn(function()
          local s, err = smtp.connect(submission{ debug = dbg })
          assert(s, err)
          local list = {}
          for i = 1, 3 do
            list[i] = { from = FROM, to = "many" .. i .. "@example.net", subject = "many " .. i, text = body(i) }
          end
          out.results = s:send_many(list)
          out.authenticated = s.authenticated
          s:quit()
        end)
        assert.is_true(d.run(60), "the loop did not finish in 60 s")
        assert.is_string(out.authenticated)
        for i = 1, 3 do assert.equal(250, out.results[i].code, tostring(out.results[i].error)) end
        local last_chunks, data = servers.last_chunks_and_data(lines)
        assert.equal(3, last_chunks)
        assert.equal(0, data, "no DATA on the CHUNKING path")
        assert.is_true(servers.pipelined(lines), "MAIL+RCPT, BDAT LAST+MAIL written together")
        local got = pf:by_subject("many ", 3)
        for i = 1, 3 do
          assert.is_table(got["many " .. i], "message " .. i .. " not delivered")
          assert.equal(body(i), got["many " .. i].content:match("\n\n(.*)$"))
        end
      end)
    end)

    describe("TLS", function()
      local tls_srv, implicit_srv, wrong_srv

      local function need()
        local missing = certs.missing(true)
        if missing then
          pending(missing .. " (the test server needs LuaSec and openssl for TLS)")
          return false
        end
        local c = pki()
        tls_srv = tls_srv or nginx.slow_server{ delay = 0, cert = c.good, key = c.good_key, max_time = 120 }
        implicit_srv = implicit_srv or nginx.slow_server{ delay = 0, cert = c.good, key = c.good_key,
          implicit = true, max_time = 120 }
        wrong_srv = wrong_srv or nginx.slow_server{ delay = 0, cert = c.wronghost, key = c.wronghost_key,
          max_time = 120 }
        return true
      end

      it("STARTTLS verified against the test CA, EHLO again, delivered", function()
        if not need() then return end
        local lines, dbg = recorder()
        local res, err = send_in_loop(name, message{ transport = name, host = "localhost", port = tls_srv.port,
          tls = "starttls", cafile = C.ca, subject = "over starttls", debug = dbg })
        assert.is_table(res, err)
        assert.equal(250, res.code)
        assert.truthy(find_line(lines, "^send: 'STARTTLS\\r\\n'"))
        assert.truthy(find_line(lines, "^tls: handshake, verifying the certificate for localhost$"))
        assert.truthy(find_line(lines, "^tls: TLSv1%.[23] "), table.concat(lines, "\n"))
        assert.matches("\nTLS TLSv1%.[23] CLIENT", "\n" .. tls_srv:output())
      end)

      it("implicit TLS verified for 127.0.0.1 (an IP address), delivered", function()
        if not need() then return end
        local res, err = send_in_loop(name, message{ transport = name, host = "127.0.0.1",
          port = implicit_srv.port, tls = "implicit", cafile = C.ca, subject = "over implicit tls" })
        assert.is_table(res, err)
        assert.equal(250, res.code)
        -- the send report as with the C transport: where, which TLS, whose certificate
        local rs = res.session
        assert.equal("127.0.0.1", rs.address)
        assert.matches("^TLSv1%.[23]$", rs.tls.version)
        assert.is_true(rs.tls.verified)
        assert.is_table(rs.tls.peer, "no peer certificate in the report")
        assert.matches("CN=", rs.tls.peer.subject)
      end)

      local bad = {
        { what = "a name the certificate does not carry", srv = function() return tls_srv end,
          opts = { host = "127.0.0.1", servername = "mail.example" }, text = "hostname mismatch" },
        { what = "an IP address the certificate does not carry", srv = function() return wrong_srv end,
          opts = { host = "127.0.0.1" }, text = "IP address mismatch" },
        { what = "a certificate for another host", srv = function() return wrong_srv end,
          opts = { host = "localhost" }, text = "hostname mismatch" },
        { what = "a CA that did not sign it", srv = function() return tls_srv end,
          opts = { host = "localhost", cafile = "other_ca" }, text = "unable to get local issuer certificate" },
        { what = "the system store instead of the test CA", srv = function() return tls_srv end,
          opts = { host = "localhost", cafile = false }, text = "unable to get local issuer certificate" },
      }
      for _, case in ipairs(bad) do
        it("STARTTLS refused for " .. case.what .. ", with the C transport's text", function()
          if not need() then return end
          local opts = message{ port = case.srv().port, tls = "starttls", cafile = C.ca }
          for k, v in pairs(case.opts) do opts[k] = v end
          if opts.cafile == "other_ca" then opts.cafile = C.other_ca end
          if opts.cafile == false then opts.cafile = nil end
          local r1, e1, i1 = smtp.send(opts)
          opts.transport = name
          local r2, e2, i2 = send_in_loop(name, opts)
          assert.is_nil(r1)
          assert.is_nil(r2)
          assert.equal("tls", i1.kind, e1)
          assert.matches("^tls: certificate verify failed: ", e1)
          assert.matches(case.text, e1, 1, true)
          assert.equal(e1, e2)
          assert.equal(i1.stage, i2.stage)
          assert.equal(i1.temporary, i2.temporary)
        end)
      end

      it("a client certificate (cert, key) for a server that demands one", function()
        if not need() then return end
        local mtls = nginx.slow_server{ delay = 0, cert = C.good, key = C.good_key, client_ca = C.ca, max_time = 60 }
        local res, err = send_in_loop(name, message{ transport = name, host = "localhost", port = mtls.port,
          tls = "starttls", cafile = C.ca, cert = C.client, key = C.client_key, subject = "with a client cert" })
        local out = mtls:output()
        mtls:stop()
        assert.is_table(res, err)
        assert.matches("CLIENT lua-smtp test client", out, 1, true)
      end)

      it("verify = false connects to the wrong host's certificate, and the transcript says so", function()
        if not need() then return end
        local lines, dbg = recorder()
        local res, err = send_in_loop(name, message{ transport = name, host = "127.0.0.1", port = wrong_srv.port,
          tls = "starttls", verify = false, debug = dbg, subject = "unverified" })
        assert.is_table(res, err)
        assert.truthy(find_line(lines, "^tls: handshake WITHOUT certificate verification %(verify = false%)$"))
      end)
    end)
  end)
end

return M
