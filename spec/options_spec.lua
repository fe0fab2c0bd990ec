-- The option table (smtp.options): every entry point rejects unknown
-- names (suggesting the closest), wrong types and out-of-range values at
-- the caller's line, before any connection; value problems in message
-- content return the failure triple.
local smtp = require "smtp"
local options = require "smtp.options"
local servers = require "spec.support.servers"
local socket = require "socket"

local FROM, TO = "sender@example.org", "rcpt@example.net"

-- The error a call raises, checked to point at the line that made it.
local function raised(fn, a, b, c)
  local line
  local ok, err = pcall(function()
    line = debug.getinfo(1, "l").currentline + 1
    local r = fn(a, b, c)
    return r
  end)
  assert.is_false(ok, "expected an error")
  err = tostring(err)
  assert.truthy(err:find("options_spec.lua:" .. line .. ":", 1, true), "not blamed on the caller: " .. err)
  return err
end

-- A listening socket that nobody serves: afterwards, accepted() says
-- whether a client connected to it.
local function listener()
  local l = assert(socket.bind("127.0.0.1", 0))
  local _, port = l:getsockname()
  return tonumber(port), function()
    l:settimeout(0)
    local c = l:accept()
    l:close()
    if c then c:close() end
    return c ~= nil
  end
end

describe("options", function()
  after_each(function() servers.stop_all() end)

  describe("one table", function()
    it("names every option once, each with a check, a description and where it is taken", function()
      local seen = {}
      for _, o in ipairs(options.list) do
        assert.is_nil(seen[o.name], o.name .. " twice")
        seen[o.name] = true
        assert.is_function(o.valid, o.name)
        assert.is_string(o.want, o.name)
        assert.is_string(o.doc, o.name)
        assert.truthy(o.where:match("^[cmrb]+$"), o.name)
      end
    end)
  end)

  describe("the generated reference and annotations", function()
    it("docs/options.md and types/smtp.lua are what scripts/gen-options.lua makes of the table", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p '" .. dir .. "/docs' '" .. dir .. "/types'"))
      local gen = assert(loadfile("scripts/gen-options.lua"))
      local saved = rawget(_G, "arg")
      rawset(_G, "arg", { dir })
      local ok, err = pcall(gen)
      rawset(_G, "arg", saved)
      assert(ok, err)
      for _, f in ipairs({ "docs/options.md", "types/smtp.lua" }) do
        local a = assert(io.open(f, "rb")):read("*a")
        local b = assert(io.open(dir .. "/" .. f, "rb")):read("*a")
        assert.is_true(a == b, f .. " is out of date: run make docs")
      end
      os.execute("rm -rf '" .. dir .. "'")
    end)

    it("the reference names every option", function()
      local md = assert(io.open("docs/options.md", "rb")):read("*a")
      for _, o in ipairs(options.list) do
        assert.truthy(md:find("| `" .. o.name .. "` |", 1, true), o.name)
      end
    end)
  end)

  describe("unknown options", function()
    it("a misspelt message option names the closest one", function()
      local err = raised(smtp.send, { host = "127.0.0.1", from = FROM, to = TO, sbuject = "hi", text = "x" })
      assert.matches("unknown option 'sbuject' %(did you mean 'subject'%?%)", err)
    end)

    it("a misspelt connection option names the closest one", function()
      local err = raised(smtp.connect, { host = "127.0.0.1", insecure_ath = true })
      assert.matches("unknown option 'insecure_ath' %(did you mean 'insecure_auth'%?%)", err)
    end)

    it("a name far from every option is just unknown", function()
      local err = raised(smtp.connect, { host = "127.0.0.1", zzzzzzzzzzzz = 1 })
      assert.matches("unknown option 'zzzzzzzzzzzz'$", err)
    end)

    it("smtp.message, s:send and send_many check their tables too", function()
      assert.matches("did you mean 'html'", raised(smtp.message, { from = FROM, to = TO, htlm = "<p>" }))
      local srv = servers.debug_server{ quiet = true }
      local s = assert(smtp.connect{ host = "127.0.0.1", port = srv.port, tls = "none" })
      assert.matches("did you mean 'attachments'", raised(s.send, s, { from = FROM, to = TO, attachmnets = {} }))
      assert.matches("send_many entry 2", raised(s.send_many, s, { { from = FROM, to = TO, text = "a" },
        { from = FROM, to = TO, txt = "b" } }))
      assert.matches("did you mean 'window'", raised(s.send_many, s, {}, { windw = 2 }))
      assert.matches("not taken here", raised(s.send_many, s, {}, { host = "x" }))
      s:quit()
    end)

    it("smtp.message does not take a raw message", function()
      assert.matches("not taken here", raised(smtp.message, { from = FROM, to = TO, message = "x" }))
    end)
  end)

  describe("security options take exactly their documented values", function()
    local bad = {
      { "insecure_auth", "false" }, { "insecure_auth", "no" }, { "insecure_auth", 0 }, { "insecure_auth", 1 },
      { "verify", "false" }, { "verify", 0 }, { "verify", "no" },
      { "tls", "yes" }, { "tls", true }, { "tls", "STARTTLS" },
      { "pipelining", "no" }, { "pipelining", 0 }, { "chunking", "false" },
      { "auth", "DIGEST-MD5" }, { "auth", 1 }, { "protocol", "esmtp" },
    }
    for _, c in ipairs(bad) do
      it(c[1] .. " = " .. string.format("%q", tostring(c[2])) .. " (" .. type(c[2]) .. ") raises", function()
        local err = raised(smtp.connect, { host = "127.0.0.1", [c[1]] = c[2] })
        assert.matches("option '" .. c[1] .. "' must be", err)
      end)
    end

    it("the documented values pass", function()
      for _, o in ipairs({ { "insecure_auth", false }, { "verify", true }, { "tls", "starttls" },
                           { "pipelining", false }, { "chunking", true }, { "auth", "plain" } }) do
        assert.is_true(options.by_name[o[1]].valid(o[2]), o[1])
      end
    end)
  end)

  describe("values that would mean forever or crash", function()
    local cases = {
      { "timeout", 0 }, { "timeout", -1 }, { "timeout", 0 / 0 }, { "timeout", math.huge },
      { "deadline", 0 }, { "deadline", -5 }, { "window", 0 }, { "window", 1.5 }, { "window", -1 },
      { "port", 0 }, { "port", 70000 }, { "port", 25.5 }, { "pool_size", 0 },
      { "limits", { max_line = 0 } }, { "limits", { max_lines = -1 } }, { "limits", { max_out = 1 } },
      { "limits", "big" }, { "debug", 3 }, { "debug", "yes" },
      -- under the engine's minimums: these used to raise only after connecting
      { "limits", { max_line = 511 } }, { "limits", { max_output = 4095 } },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " = " .. tostring(c[2]) .. " raises before connecting", function()
        local port, accepted = listener()
        raised(smtp.send, { host = "127.0.0.1", port = port, tls = "none", from = FROM, to = TO,
                            text = "x", [c[1]] = c[2] })
        assert.is_false(accepted(), "a connection was made")
      end)
    end

    it("smtp.message refuses dkim: signing happens when a message is sent", function()
      assert.matches("option 'dkim' is not taken here", raised(smtp.message, { from = FROM, to = TO,
        dkim = { domain = "example.com", selector = "s", key = "x" } }))
    end)

    it("date = 1e300 and a negative date raise", function()
      assert.matches("option 'date'", raised(smtp.message, { from = FROM, to = TO, date = 1e300 }))
      assert.matches("option 'date'", raised(smtp.message, { from = FROM, to = TO, date = -1 }))
    end)

    it("a message object whose size is not a whole number of octets raises", function()
      local obj = { source = function() return function() return nil end end, size = 1e30 }
      assert.matches("option .message. %.size", raised(smtp.send, { host = "127.0.0.1", message = obj,
        envelope = { from = FROM, to = { TO } } }))
      obj.size = -1
      assert.matches("option .message. %.size", raised(smtp.send, { host = "127.0.0.1", message = obj,
        envelope = { from = FROM, to = { TO } } }))
    end)
  end)

  describe("NUL in a string that reaches C", function()
    for _, name in ipairs({ "host", "servername", "cafile", "capath", "cert", "key", "path", "user",
                            "password", "authzid", "token" }) do
      it(name .. " raises", function()
        local err = raised(smtp.connect, { host = "127.0.0.1", [name] = "/etc/hostname\0.evil" })
        assert.matches("option '" .. name .. "' must be", err)
      end)
    end

    it("an attachment path is an argument failure, nothing read", function()
      local res, err, info = smtp.message{ from = FROM, to = TO, attachments = { { path = "/etc/hostname\0.txt" } } }
      assert.is_nil(res)
      assert.matches("^argument: attachments%[1%]: path contains a NUL", err)
      assert.equal(false, info.temporary)
    end)
  end)

  describe("dates are printable text", function()
    for _, d in ipairs({ "Thu, 1 Jan 2026 00:00:00 +0000\0", "Thu, 1 Jan 2026 \27[31m00:00:00 +0000",
                         "Thu, 1 Jan 2026 00:00:00 +0000 \195\169", "" }) do
      it(string.format("%q", d):gsub("\\\n", "\\n") .. " is an argument failure", function()
        local res, err = smtp.message{ from = FROM, to = TO, date = d }
        assert.is_nil(res)
        assert.matches("^argument: date", err)
      end)
    end
  end)

  describe("holes in lists", function()
    it("to, cc, bcc, attachments, headers and envelope.to with a nil in the middle raise", function()
      local cases = {
        { to = { TO, nil, "c@example.net" } },
        { cc = { TO, nil, "c@example.net" } },
        { bcc = { TO, nil, "c@example.net" } },
        { attachments = { { content = "a" }, nil, { content = "c" } } },
        { headers = { { "X-A", "1" }, nil, { "X-C", "3" } } },
      }
      for _, c in ipairs(cases) do
        local spec = { from = FROM, to = TO }
        for k, v in pairs(c) do spec[k] = v end
        assert.matches("hole", raised(smtp.message, spec))
      end
      assert.matches("hole", raised(smtp.send, { host = "127.0.0.1", message = "x\r\n",
        envelope = { from = FROM, to = { TO, nil, "c@example.net" } } }))
    end)

    it("a headers table mixing pairs and fields raises", function()
      assert.matches("mixes", raised(smtp.message, { from = FROM, to = TO,
        headers = { { "X-A", "1" }, ["X-B"] = "2" } }))
    end)

    it("send_many with a hole raises", function()
      local srv = servers.debug_server{ quiet = true }
      local s = assert(smtp.connect{ host = "127.0.0.1", port = srv.port, tls = "none" })
      assert.matches("hole", raised(s.send_many, s, { { from = FROM, to = TO, text = "a" }, nil,
        { from = FROM, to = TO, text = "c" } }))
      s:quit()
    end)
  end)

  describe("credentials", function()
    it("a user without password or token is an argument failure, before connecting", function()
      local port, accepted = listener()
      local res, err, info = smtp.send{ host = "127.0.0.1", port = port, tls = "none", user = "ann",
                                       password = os.getenv("SMTP_PASSWORD_THAT_IS_NOT_SET"),
                                       from = FROM, to = TO, text = "x" }
      assert.is_nil(res)
      assert.matches("^argument: 'user' given without 'password'", err)
      assert.equal(false, info.temporary)
      assert.is_false(accepted(), "a connection was made")
    end)
  end)

  describe("the nginx pool key", function()
    -- A polynomial hash, hex: any digest will do for the spec (nginx: SHA-1).
    local function hash(x)
      local h = 7
      for i = 1, #x do
        h = (h * 31 + x:byte(i)) % 4294967296
      end
      return string.format("%08x", h)
    end
    local base = { host = "mx.example.net", port = 587, tls = "starttls", verify = true,
                   servername = "mx.example.net", helo = "client.example.org", protocol = "smtp",
                   user = "ann", password = "s3cret-one", auth = "PLAIN", authzid = "team" }
    -- two different values for every option that decides who the session
    -- is and what it may do
    local values = {
      host = { "a.example", "b.example" }, port = { 25, 2525 }, path = { "/run/a", "/run/b" },
      tls = { "starttls", "implicit" }, verify = { true, false },
      servername = { "a.example", "b.example" }, cafile = { "/etc/a.pem", "/etc/b.pem" },
      capath = { "/etc/a", "/etc/b" }, cert = { "/etc/a.crt", "/etc/b.crt" },
      key = { "/etc/a.key", "/etc/b.key" }, user = { "ann", "bob" },
      password = { "s3cret-one", "s3cret-two" }, token = { "tok-one-xyz", "tok-two-xyz" },
      auth = { "PLAIN", "LOGIN" }, authzid = { "team", "boss" }, insecure_auth = { false, true },
      helo = { "a.example.org", "b.example.org" }, protocol = { "smtp", "lmtp" },
      pipelining = { true, false },
      proxy = { "socks5://ann:s3cret-one@127.0.0.1:1080", "socks5://ann:s3cret-two@127.0.0.1:1080" },
    }

    it("covers every option the issue names, and no others", function()
      local identity = {}
      for _, o in ipairs(options.list) do
        if o.identity then identity[#identity + 1] = o.name end
      end
      table.sort(identity)
      local want = {}
      for name in pairs(values) do want[#want + 1] = name end
      table.sort(want)
      assert.same(want, identity)
    end)

    for name, pair in pairs(values) do
      it("changes with " .. name .. ", and shows no secret in clear", function()
        local a, b = {}, {}
        for k, v in pairs(base) do a[k], b[k] = v, v end
        if name == "token" then a.password, b.password = nil, nil end
        a[name], b[name] = pair[1], pair[2]
        local ka, kb = options.pool_key(a, nil, hash), options.pool_key(b, nil, hash)
        assert.are_not.equal(ka, kb)
        for _, key in ipairs({ ka, kb }) do
          for _, secret in ipairs({ "s3cret-one", "s3cret-two", "tok-one-xyz", "tok-two-xyz" }) do
            assert.is_nil(key:find(secret, 1, true), "secret in the key: " .. key)
          end
        end
      end)
    end

    it("the values connect worked out (resolved) count, not the caller's", function()
      local k1 = options.pool_key(base, { port = 25 }, hash)
      local k2 = options.pool_key(base, { port = 465 }, hash)
      assert.are_not.equal(k1, k2)
    end)

    it("a token function stands for its user: a new closure per request does not split the pool", function()
      local a = { host = "h", user = "ann", token = function() return "x" end }
      local b = { host = "h", user = "ann", token = function() return "y" end }
      assert.equal(options.pool_key(a, nil, hash), options.pool_key(b, nil, hash))
      local c = { host = "h", user = "bob", token = a.token }
      assert.are_not.equal(options.pool_key(a, nil, hash), options.pool_key(c, nil, hash))
    end)
  end)
end)
