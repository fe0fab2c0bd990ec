-- Specs for the spec helpers themselves: bin/smtp-debug-server,
-- spec/support/fake_server.lua and spec/support/servers.lua.
-- Only LuaSocket is used as the client.

local socket = require "socket"
local servers = require "spec.support.servers"
local util = require "spec.support.util"

local connect, reply = util.connect, util.read_reply

local function process_gone(pid)
  local ok = os.execute("kill -0 " .. pid .. " 2>/dev/null")
  return not (ok == true or ok == 0)
end

local wait_for = util.wait_for

describe("spec support", function()
  after_each(function()
    servers.stop_all()
  end)

  describe("smtp-debug-server", function()
    it("greets and answers EHLO with its capabilities", function()
      local dbg = servers.debug_server{}
      assert.is_number(dbg.port)
      assert.matches("^listening on 127%.0%.0%.1:" .. dbg.port .. "\n", dbg:output())
      local c = connect(dbg.port)
      assert.equal(220, (reply(c)))
      c:send("EHLO client.example\r\n")
      local code, lines = reply(c)
      assert.equal(250, code)
      local caps = {}
      for i = 2, #lines do caps[lines[i]:sub(5)] = true end
      for _, cap in ipairs{ "SIZE 52428800", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "HELP" } do
        assert.is_true(caps[cap], "missing capability " .. cap)
      end
      c:send("HELO client.example\r\n")
      assert.equal(250, (reply(c)))
      c:send("NOOP\r\n")
      assert.equal(250, (reply(c)))
      c:send("VRFY someone\r\n")
      assert.equal(252, (reply(c)))
      c:send("EXPN list\r\n")
      assert.equal(502, (reply(c)))
      c:send("RCPT TO:<x@y>\r\n")
      assert.equal(503, (reply(c)))
      c:send("MAIL FROM:<a@b> SIZE=99999999999\r\n")
      local c552, l552 = reply(c)
      assert.equal(552, c552)
      assert.matches("^552 5%.3%.4", l552[1])
      c:send("QUIT\r\n")
      assert.equal(221, (reply(c)))
      c:close()
      dbg:stop()
    end)

    it("accepts a pipelined MAIL/RCPT/DATA and prints the un-stuffed message", function()
      local dbg = servers.debug_server{ max_messages = 1 }
      local c = connect(dbg.port)
      assert.equal(220, (reply(c)))
      c:send("EHLO client.example\r\n")
      assert.equal(250, (reply(c)))
      -- all three commands in one write
      assert(c:send("MAIL FROM:<sender@example.org> SIZE=100\r\n"
        .. "RCPT TO:<one@example.net>\r\n"
        .. "RCPT TO:<two@example.net>\r\n"
        .. "DATA\r\n"))
      local code, lines = reply(c)
      assert.equal(250, code); assert.equal("250 2.1.0 Ok", lines[1])
      code, lines = reply(c)
      assert.equal(250, code); assert.equal("250 2.1.5 Ok", lines[1])
      assert.equal(250, (reply(c)))
      assert.equal(354, (reply(c)))
      -- message end and QUIT in one write, too
      assert(c:send("Subject: test\r\n\r\n..leading dot\r\nplain line\r\n...\r\n.\r\nQUIT\r\n"))
      code, lines = reply(c)
      assert.equal(250, code)
      assert.matches("^250 2%.0%.0 Ok: queued as %w+$", lines[1])
      assert.equal(221, (reply(c)))
      c:close()
      -- --max-messages 1: the server exits by itself
      assert.is_true(dbg:wait(5))
      local out = dbg:output()
      local expected = "---------- MESSAGE FOLLOWS ----------\n"
        .. "mail from: <sender@example.org> SIZE=100\n"
        .. "rcpt to: <one@example.net>\n"
        .. "rcpt to: <two@example.net>\n"
        .. "Subject: test\n\n.leading dot\nplain line\n..\n"
        .. "------------ END MESSAGE ------------\n"
      assert.equal("listening on 127.0.0.1:" .. dbg.port .. "\n" .. expected, out)
      dbg:stop()
    end)

    it("serves several clients at once and rejects over-long lines", function()
      local dbg = servers.debug_server{}
      local a, b = connect(dbg.port), connect(dbg.port)
      assert.equal(220, (reply(a)))
      assert.equal(220, (reply(b)))
      b:send("EHLO b\r\n")
      assert.equal(250, (reply(b)))
      a:send(string.rep("x", 5000) .. "\r\n")
      local code, lines = reply(a)
      assert.equal(500, code)
      assert.equal("500 5.5.2 Line too long", lines[1])
      local _, err = a:receive("*l")
      assert.equal("closed", err)
      b:send("NOOP\r\n")
      assert.equal(250, (reply(b)))
      a:close(); b:close()
      dbg:stop()
    end)
  end)

  describe("fake server", function()
    it("follows its script and records the client's bytes exactly", function()
      local srv = servers.fake{
        steps = {
          { send = "220 fake ESMTP\r\n" },
          { expect = "^EHLO " },
          { send = "250-fake\r\n250 SIZE 1000\r\n" },
          { read = "line" },
          { send = "354 go\r\n" },
          { read = "data" },
          { send = "250 ok\r\n" },
        },
      }
      assert.is_number(srv.port)
      assert.is_number(srv.pid)
      local c = connect(srv.port)
      assert.equal("220 fake ESMTP", c:receive("*l"))
      -- EHLO and the next line arrive together: nothing may be lost
      c:send("EHLO me\r\nDATA\r\n")
      local code, lines = reply(c)
      assert.equal(250, code)
      assert.same({ "250-fake", "250 SIZE 1000" }, lines)
      assert.equal("354 go", c:receive("*l"))
      c:send("line 1\r\n..x\r\n.\r\n")
      assert.equal("250 ok", c:receive("*l"))
      c:send("QUIT\r\n")
      c:close()
      assert.is_true(srv:wait(5))
      assert.equal("EHLO me\r\nDATA\r\nline 1\r\n..x\r\n.\r\nQUIT\r\n", srv:received())
      srv:stop()
    end)

    it("answers a mismatch with 500 and ends the connection", function()
      local srv = servers.fake{
        steps = { { send = "220 hi\r\n" }, { expect = "^EHLO " }, { send = "250 ok\r\n" } },
      }
      local c = connect(srv.port)
      assert.equal("220 hi", c:receive("*l"))
      c:send("HELO me\r\n")
      assert.equal("500 5.5.2 unexpected", c:receive("*l"))
      local _, err = c:receive("*l")
      assert.equal("closed", err)
      c:close()
      assert.is_true(srv:wait(5))
      assert.matches("MISMATCH: HELO me", srv:errors(), 1, true)
      srv:stop()
    end)

    it("trickles bytes one at a time", function()
      local srv = servers.fake{ steps = { { trickle = "250 ok\r\n", interval = 0.1 } } }
      local c = connect(srv.port)
      local t0 = socket.gettime()
      c:settimeout(0.05)
      local _, err, partial = c:receive("*l")
      assert.equal("timeout", err)
      assert.is_true(#partial < 8)
      c:settimeout(5)
      local rest = c:receive("*l", partial)
      assert.equal("250 ok", rest)
      assert.is_true(socket.gettime() - t0 >= 0.6)
      c:close()
      assert.is_true(srv:wait(5))
      srv:stop()
    end)

    it("serves connections in sequence, sends huge replies and resets #timing", function()
      local srv = servers.fake{
        connections = 2,
        steps = {
          { sendfn = "return string.rep('250-x\\r\\n', 100000) .. '250 end\\r\\n'" },
          { read = "line" },
          { reset = true },
        },
      }
      for n = 1, 2 do
        local c = connect(srv.port)
        local code, lines = reply(c)
        assert.equal(250, code)
        assert.equal(100001, #lines)
        c:send("bye " .. n .. "\r\n")
        local _, err = c:receive("*l")
        assert.is_true(err == "closed" or err == "connection reset by peer", tostring(err))
        c:close()
      end
      assert.is_true(srv:wait(5))
      assert.equal("bye 1\r\nbye 2\r\n", srv:received())
      srv:stop()
    end)

    it("exits on its overall timeout", function()
      local srv = servers.fake{ timeout = 0.5, steps = { { read = "all" } } }
      local c = connect(srv.port)   -- connected, but never closes
      local t0 = socket.gettime()
      assert.is_true(srv:wait(5))
      local took = socket.gettime() - t0
      -- its own 0.5 s, with room for a loaded 2-CPU machine (no speed target)
      assert.is_true(took < 3, "took " .. took)
      assert.matches("TIMEOUT", srv:errors())
      c:close()
      srv:stop()
    end)

    it("does not keep a spec's connection open in a later server", function()
      if not servers.closes_fds then
        pending("needs bash and /proc to close inherited descriptors")
        return
      end
      local a = servers.fake{ steps = { { read = "all" } } }
      local c = connect(a.port)
      c:send("hello\r\n")
      assert.is_true(wait_for(5, function() return a:received() == "hello\r\n" end))
      -- started while c is open: must not inherit c's descriptor
      local b = servers.fake{ steps = {} }
      c:close()
      assert.is_true(a:wait(5))
      a:stop(); b:stop()
    end)

    it("accepts a script given as Lua source", function()
      local srv = servers.fake("return { steps = { { send = '220 src\\r\\n' } } }")
      local c = connect(srv.port)
      assert.equal("220 src", c:receive("*l"))
      c:close()
      assert.is_true(srv:wait(5))
      srv:stop()
    end)
  end)

  describe("smtp-sink", function()
    it("starts and answers EHLO", function()
      if not servers.available.sink then
        pending("smtp-sink is not installed")
        return
      end
      local sink = servers.sink{}
      local c = connect(sink.port)
      assert.equal(220, (reply(c)))
      c:send("EHLO me\r\n")
      local code, lines = reply(c)
      assert.equal(250, code)
      assert.is_true(#lines > 1)
      c:send("QUIT\r\n")
      assert.equal(221, (reply(c)))
      c:close()
      local pid = sink.pid
      sink:stop()
      assert.is_true(process_gone(pid))
    end)
  end)

  describe("servers", function()
    it("free_port returns a usable port", function()
      local port = servers.free_port()
      assert.is_true(port > 0 and port < 65536)
      local s = assert(socket.bind("127.0.0.1", port))
      s:close()
    end)

    it("stop() leaves no process behind and is safe to call twice", function()
      local srv = servers.fake{ timeout = 30, steps = { { read = "all" } } }
      local dbg = servers.debug_server{}
      local fake_pid, dbg_pid = srv.pid, dbg.pid
      assert.is_false(process_gone(fake_pid))
      assert.is_false(process_gone(dbg_pid))
      local c = connect(dbg.port)   -- a session in progress does not matter
      srv:stop(); dbg:stop()
      assert.is_true(process_gone(fake_pid))
      assert.is_true(process_gone(dbg_pid))
      srv:stop(); dbg:stop()
      c:close()
    end)
  end)
end)
