-- DKIM signing and one-click unsubscribe. Every signature is checked by
-- an independent verifier, Debian's dkimpy (spec/support/dkim_verify.py),
-- given the public keys through its DNS hook; the messages are the bytes a
-- server received (the scriptable fake server over DATA and over BDAT, and
-- the copies the private Postfix delivered). The RFC 8463 example key and
-- message are a fixed vector for the hashing and the Ed25519 signer.
local smtp = require "smtp"
local core = require "smtp.core"
local servers = require "spec.support.servers"
local postfix = require "spec.support.postfix"
local util = require "spec.support.util"

local PYTHON = "/usr/bin/python3"
local FROM, TO = "sender@example.org", "rcpt@example.net"

local sh_quote, write, run = util.shell_quote, util.write_file, util.run
local function read(path) return assert(util.read_file(path)) end

local function have_dkimpy()
  return run(PYTHON .. " -c 'import dkim, nacl'")
end

-- ---- keys and the verifier ----------------------------------------------------------

local dir, keys, records

local function make_keys()
  dir = util.mkdtemp("lua-smtp-dkim")
  util.openssl_key(dir .. "/rsa.pem", "rsa")
  util.openssl_key(dir .. "/ed.pem", "ed25519")
  util.openssl_key(dir .. "/short.pem", "rsa:768")
  local _, rsa_pub = run("openssl pkey -in " .. sh_quote(dir .. "/rsa.pem") .. " -pubout -outform DER | base64 -w0")
  local _, ed_pub = run("openssl pkey -in " .. sh_quote(dir .. "/ed.pem") ..
    " -pubout -outform DER | tail -c 32 | base64 -w0")
  keys = { rsa = read(dir .. "/rsa.pem"), ed = read(dir .. "/ed.pem"), short = read(dir .. "/short.pem") }
  records = {
    "rsa._domainkey.example.org=v=DKIM1; k=rsa; p=" .. rsa_pub,
    "ed._domainkey.example.org=v=DKIM1; k=ed25519; p=" .. ed_pub,
  }
end

-- dkimpy's verdict on a message: true, output.
local function verify(message)
  local file = dir .. "/msg.eml"
  write(file, message)
  local args = {}
  for i, r in ipairs(records) do args[i] = sh_quote(r) end
  return run(PYTHON .. " spec/support/dkim_verify.py " .. sh_quote(file) .. " " .. table.concat(args, " "))
end

local function rsa(extra)
  local d = { domain = "example.org", selector = "rsa", key = keys.rsa }
  for k, v in pairs(extra or {}) do d[k] = v end
  return d
end

local function ed(extra)
  local d = { domain = "example.org", selector = "ed", key = keys.ed, algorithm = "ed25519-sha256" }
  for k, v in pairs(extra or {}) do d[k] = v end
  return d
end

-- ---- what a server received -----------------------------------------------------------

local DATA_CAPS = { "PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 100000000", "ENHANCEDSTATUSCODES" }
local BDAT_CAPS = { "PIPELINING", "CHUNKING", "8BITMIME", "SMTPUTF8", "SIZE 100000000", "ENHANCEDSTATUSCODES" }

local function serving(caps)
  local lines = { "250-fake.test\r\n" }
  for i, c in ipairs(caps) do lines[#lines + 1] = "250" .. (i < #caps and "-" or " ") .. c .. "\r\n" end
  return {
    { send = "220 fake.test ESMTP\r\n" }, { expect = "^EHLO " }, { send = table.concat(lines) },
    { serve = {
      { "^MAIL FROM:", "250 2.1.0 ok\r\n" },
      { "^RCPT TO:", "250 2.1.5 ok\r\n" },
      { "^DATA$", "354 go ahead\r\n", data = "250 2.0.0 queued\r\n" },
      { "^BDAT ", "250 2.0.0 chunk ok\r\n", last = "250 2.0.0 queued\r\n" },
      { "^RSET$", "250 2.0.0 reset\r\n" },
      { "^QUIT$", "221 2.0.0 bye\r\n", close = true },
    } },
  }
end

-- The messages in a server's record (dot-unstuffed after DATA, BDAT
-- payloads joined), and the SIZE= each MAIL declared.
local function messages_in(rec)
  local out, sizes, i = {}, {}, 1
  local cur
  while i <= #rec do
    local e = rec:find("\r\n", i, true) or #rec
    local line = rec:sub(i, e - 1)
    i = e + 2
    local size = line:match("^BDAT (%d+)")
    if size then
      cur = (cur or "") .. rec:sub(i, i + tonumber(size) - 1)
      i = i + tonumber(size)
      if line:find(" LAST$") then
        out[#out + 1], cur = cur, nil
      end
    elseif line:match("^MAIL FROM:") then
      sizes[#sizes + 1] = tonumber(line:match(" SIZE=(%d+)"))
    elseif line == "DATA" then
      local stop = rec:find("\r\n.\r\n", i - 2, true)
      local body = rec:sub(i, stop + 1)
      out[#out + 1] = body:gsub("\r\n%.", "\r\n"):gsub("^%.", "")
      i = stop + 5
    end
  end
  return out, sizes
end

-- Sends with call(port) to a fake server offering caps; returns the
-- messages it received, the SIZE= declared, and what the call returned.
local function received(caps, call)
  local srv = servers.fake{ steps = serving(caps), timeout = 60 }
  local res, err = call(srv.port)
  srv:wait(10)
  local msgs, sizes = messages_in(srv:received())
  srv:stop()
  return msgs, sizes, res, err
end

local function send_to(extra)
  return function(port)
    local o = { host = "127.0.0.1", port = port, tls = "none", helo = "client.test", timeout = 20 }
    for k, v in pairs(extra) do o[k] = v end
    return smtp.send(o)
  end
end

local function composed(extra)
  local o = { from = "Sender <" .. FROM .. ">", to = TO, subject = "Signed", text = "Hello  there \n\n\n",
              date = "Thu, 01 Jan 2026 00:00:00 +0000" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- =======================================================================================

describe("DKIM #dkim", function()
  local skip

  setup(function()
    if not have_dkimpy() then
      skip = "dkimpy missing (apt-get install python3-dkim python3-nacl)"
      return
    end
    make_keys()
  end)

  teardown(function()
    servers.stop_all()
    util.remove_tree(dir)
  end)

  describe("the RFC 8463 example (fixed vector)", function()
    local MESSAGE = "From: Joe SixPack <joe@football.example.com>\r\n" ..
      "To: Suzie Q <suzie@shopping.example.net>\r\nSubject: Is dinner ready?\r\n" ..
      "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n" ..
      "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n\r\n" ..
      "Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n"

    it("body hashes: relaxed and simple", function()
      local h = core.dkim_body(true, 65536)
      h:update(MESSAGE)
      local head, bh = h:finish()
      assert.equal("2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=", core.b64encode(bh, 0))
      assert.equal(MESSAGE:match("^(.-\r\n)\r\n"), head)
      h = core.dkim_body(false, 65536)
      -- fed in awkward pieces: CR and LF apart, one octet at a time
      for i = 1, #MESSAGE do h:update(MESSAGE:sub(i, i)) end
      local _, sbh = h:finish()
      assert.equal("4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=", core.b64encode(sbh, 0))
    end)

    it("the Ed25519 signature of the RFC's signed header data is the RFC's b=", function()
      local seed = core.b64decode("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
      local der = "\48\46\2\1\0\48\5\6\3\43\101\112\4\34\4\32" .. seed
      local pem = "-----BEGIN PRIVATE KEY-----\n" .. core.b64encode(der, 64) .. "-----END PRIVATE KEY-----\n"
      local data = "from:Joe SixPack <joe@football.example.com>\r\n" ..
        "to:Suzie Q <suzie@shopping.example.net>\r\nsubject:Is dinner ready?\r\n" ..
        "date:Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n" ..
        "message-id:<20030712040037.46341.5F8J@football.example.com>\r\n" ..
        "dkim-signature:v=1; a=ed25519-sha256; c=relaxed/relaxed; d=football.example.com;" ..
        " i=@football.example.com; q=dns/txt; s=brisbane; t=1528637909; h=from : to : subject :" ..
        " date : message-id : from : subject : date; bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b="
      local sig = assert(core.dkim_key("ed25519-sha256", pem):sign(data))
      assert.equal("/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==",
        core.b64encode(sig, 0))
    end)
  end)

  describe("verified by dkimpy", function()
    local CANONS = { "relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed" }
    for _, caps in ipairs({ { "DATA", DATA_CAPS }, { "BDAT", BDAT_CAPS } }) do
      for _, canon in ipairs(CANONS) do
        it(caps[1] .. ", " .. canon .. ": RSA and Ed25519 side by side, SIZE exact", function()
          if skip then pending(skip) return end
          local msgs, sizes, res, err = received(caps[2], send_to(composed{
            subject = "Grüße aus Köln — ein ziemlich langer Betreff, der gefaltet werden muss",
            attachments = { { content = ("line of an attachment\n"):rep(200), filename = "a.txt" } },
            dkim = { rsa{ canonicalization = canon }, ed{ canonicalization = canon } } }))
          assert.is_table(res, err)
          assert.equal(1, #msgs)
          local _, signatures = ("\r\n" .. msgs[1]):gsub("\r\nDKIM%-Signature:", "")
          assert.equal(2, signatures)
          assert.equal(#msgs[1], sizes[1], "SIZE= is the octets sent")
          local ok, out = verify(msgs[1])
          assert.is_true(ok, out)
        end)
      end
    end

    it("a raw message with bare LF line ends, a UTF-8 header and odd spacing (simple/simple)", function()
      if skip then pending(skip) return end
      local raw = "From: J\195\182rg <j\195\182rg@example.org>\nTo: " .. TO .. "\nSubject:  tabs\tand  spaces \n" ..
        "X-Folded: one\n  two\n\nbody with trailing spaces   \n\n\n"
      local msgs, sizes, res, err = received(DATA_CAPS, send_to{ envelope = { from = FROM, to = { TO } },
        message = raw, dkim = { rsa{ canonicalization = "simple/simple" }, ed() } })
      assert.is_table(res, err)
      assert.equal(#msgs[1], sizes[1])
      local ok, out = verify(msgs[1])
      assert.is_true(ok, out)
    end)

    it("a file source: read twice, the second time from where it started", function()
      if skip then pending(skip) return end
      local path = dir .. "/in.eml"
      write(path, "X-Skip: this line is before the message\r\nFrom: " .. FROM .. "\r\nTo: " .. TO ..
        "\r\nSubject: file\r\n\r\nfrom a file\r\n")
      local f = assert(io.open(path, "rb"))
      f:read("*l")   -- the message starts at the second line
      local msgs, _, res, err = received(BDAT_CAPS, send_to{ envelope = { from = FROM, to = { TO } },
        message = f, dkim = rsa() })
      f:close()
      assert.is_table(res, err)
      assert.is_nil(msgs[1]:find("X-Skip", 1, true))
      local ok, out = verify(msgs[1])
      assert.is_true(ok, out)
    end)

    it("a 10 MB attachment", function()
      if skip then pending(skip) return end
      local path = dir .. "/big.bin"
      local block = {}
      for i = 0, 255 do block[#block + 1] = string.char(i) end
      block = table.concat(block):rep(4096)   -- 1 MB
      write(path, block:rep(10))
      local msgs, sizes, res, err = received(BDAT_CAPS, send_to(composed{
        attachments = { { path = path } }, dkim = { rsa(), ed() } }))
      assert.is_table(res, err)
      assert.is_true(#msgs[1] > 13 * 1024 * 1024)
      assert.equal(#msgs[1], sizes[1])
      local ok, out = verify(msgs[1])
      assert.is_true(ok, out)
    end)

    it("a session's dkim signs every message of send_many; dkim = false leaves one unsigned", function()
      if skip then pending(skip) return end
      local msgs, _, res = received(BDAT_CAPS, function(port)
        local s = assert(smtp.connect{ host = "127.0.0.1", port = port, tls = "none", helo = "client.test",
                                       dkim = ed() })
        local r = s:send_many{ composed{ subject = "one" }, composed{ subject = "two", dkim = false },
                               composed{ subject = "three", dkim = rsa() } }
        s:quit()
        return r
      end)
      assert.equal(3, #res)
      assert.equal(3, #msgs)
      assert.truthy(msgs[1]:find("s=ed;", 1, true))
      assert.is_nil(msgs[2]:find("DKIM-Signature", 1, true))
      assert.truthy(msgs[3]:find("s=rsa;", 1, true))
      for _, i in ipairs({ 1, 3 }) do
        local ok, out = verify(msgs[i])
        assert.is_true(ok, out)
      end
    end)

    it("one-click unsubscribe headers are added and signed", function()
      if skip then pending(skip) return end
      local msgs, _, res, err = received(DATA_CAPS, send_to(composed{
        unsubscribe = { url = "https://example.org/unsub?u=42&l=news", mailto = "unsub@example.org" },
        dkim = rsa() }))
      assert.is_table(res, err)
      local m = msgs[1]:gsub("\r\n[ \t]", " ")
      assert.truthy(m:find("\r\nList%-Unsubscribe: <https://example%.org/unsub%?u=42&l=news>, " ..
        "<mailto:unsub@example%.org>\r\n"), m)
      assert.truthy(m:find("\r\nList%-Unsubscribe%-Post: List%-Unsubscribe=One%-Click\r\n"), m)
      local h = m:match("h=([^;]*);")
      assert.truthy(h:find("list-unsubscribe:list-unsubscribe-post", 1, true), h)
      local ok, out = verify(msgs[1])
      assert.is_true(ok, out)
    end)

    describe("through the private Postfix #postfix", function()
      local pf
      setup(function()
        if not skip and postfix.available() then pf = postfix.start{} end
      end)
      teardown(function()
        if pf then pf:stop() end
        postfix.stop_all()
      end)

      it("the copies Postfix delivered verify (DATA and BDAT)", function()
        if skip or not pf then pending(skip or "postfix missing or not root") return end
        for _, chunking in ipairs({ false, true }) do
          pf:clear()
          local res, err = smtp.send(composed{ host = "127.0.0.1", port = pf.ports.plain, tls = "none",
            helo = "client.test", chunking = chunking, to = "dkim@example.net",
            attachments = { { content = ("attached text\n"):rep(5000), filename = "t.txt" } },
            dkim = { rsa(), ed{ canonicalization = "simple/simple" } } })
          assert.is_table(res, err)
          local got = pf:messages(1)
          local ok, out = verify(got[1].data)
          assert.is_true(ok, out)
        end
      end)
    end)
  end)

  describe("refusals", function()
    it("a function source cannot be read twice: argument, nothing sent", function()
      if skip then pending(skip) return end
      local done = false
      local res, err, info = smtp.send{ host = "127.0.0.1", port = 9, envelope = { from = FROM, to = { TO } },
        message = function()
          if done then return nil end
          done = true
          return "Subject: x\r\n\r\nbody\r\n"
        end, dkim = rsa() }
      assert.is_nil(res)
      assert.matches("^argument: dkim: a function source can be read only once", err)
      assert.equal(false, info.temporary)
    end)

    it("keys that do not fit: not PEM, the wrong type, RSA under 1024 bits", function()
      if skip then pending(skip) return end
      local cases = {
        { rsa{ key = "not a key" }, "not a PEM private key" },
        { rsa{ key = keys.ed }, "rsa%-sha256 needs an RSA key" },
        { ed{ key = keys.rsa }, "ed25519%-sha256 needs an Ed25519 key" },
        { rsa{ key = keys.short }, "shorter than 1024 bits" },
        { rsa{ key = { path = dir .. "/missing.pem" } }, "cannot read the key" },
        { rsa{ canonicalization = "loose/relaxed" }, "canonicalization" },
        { rsa{ domain = "exa mple.org" }, "invalid domain" },
      }
      for _, c in ipairs(cases) do
        local res, serr = smtp.send(composed{ host = "127.0.0.1", port = 9, dkim = c[1] })
        assert.is_nil(res)
        assert.truthy(serr:find("^argument: dkim: ") and serr:find(c[2]), serr .. " !~ " .. c[2])
      end
    end)

    it("wrong types raise at the caller's line", function()
      assert.has_error(function() smtp.send(composed{ dkim = { domain = "example.org" } }) end)
      assert.has_error(function() smtp.send(composed{ dkim = { domain = "x", selector = "s", key = 1 } }) end)
      assert.has_error(function() smtp.send(composed{ dkim = { domain = "x", selector = "s", key = "k",
                                                               bogus = 1 } }) end)
      assert.has_error(function() smtp.send(composed{ unsubscribe = { link = "https://x" } }) end)
    end)

    it("unsubscribe: only https for one-click; not on raw messages", function()
      local _, err = smtp.message(composed{ unsubscribe = { url = "http://example.org/u" } })
      assert.matches("https://", err)
      local res, rerr = smtp.send{ host = "127.0.0.1", port = 9, envelope = { from = FROM, to = { TO } },
        message = "Subject: x\r\n\r\nbody\r\n", unsubscribe = { mailto = "u@example.org" } }
      assert.is_nil(res)
      assert.matches("^argument: unsubscribe is for composed messages", rerr)
    end)
  end)
end)
