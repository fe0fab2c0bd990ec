-- ESMTP extensions and pipelined submission against the scriptable server:
-- DSN, 8BITMIME, SMTPUTF8, CHUNKING (BDAT), pipelining across messages,
-- LMTP. Each case checks the bytes the client sent, not only the result.
local smtp = require "smtp"
local servers = require "spec.support.servers"

local FROM, TO, TO2 = "sender@example.org", "rcpt@example.net", "other@example.net"
local BODY = "Subject: x\r\n\r\nhello\r\n"

local say, hear, steps = servers.say, servers.hear, servers.steps
local GREET = say("220 fake ESMTP\r\n")
local EHLO = "EHLO client.test"

local function ehlo_reply(...) return servers.ehlo_reply({ ... }) end

local BYE = { hear("QUIT"), say("221 bye\r\n") }

local function connect(srv, extra)
  local o = { host = "127.0.0.1", port = srv.port, timeout = 3, helo = "client.test", tls = "none" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return smtp.connect(o)
end

local function finish(srv)
  assert.is_true(srv:wait(5), "fake server still running: " .. srv:errors())
  assert.is_nil(srv:errors():find("MISMATCH", 1, true), "unexpected client bytes: " .. srv:errors())
  return srv:received()
end

describe("ESMTP extensions #socket", function()
  after_each(function() servers.stop_all() end)

  it("DSN: RET and ENVID on MAIL (xtext), NOTIFY and ORCPT on RCPT", function()
    local srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("PIPELINING", "DSN"),
      hear("MAIL FROM:<" .. FROM .. "> RET=HDRS ENVID=id+2Bone+3D1"),
      hear("RCPT TO:<" .. TO .. "> NOTIFY=FAILURE,DELAY ORCPT=rfc822;" .. TO),
      hear("DATA"), say("250 ok\r\n250 ok\r\n354 go\r\n"), { read = "data" }, say("250 queued\r\n"), BYE) }
    local s = assert(connect(srv))
    local res, err = s:send{ envelope = { from = FROM, to = { TO } }, message = BODY,
      dsn = { ret = "hdrs", envid = "id+one=1", notify = { "failure", "delay" }, orcpt = true } }
    assert.is_table(res, err)
    s:quit()
    finish(srv)
  end)

  it("DSN asked of a server without it fails as unsupported before MAIL", function()
    local srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("PIPELINING"), BYE) }
    local s = assert(connect(srv))
    local res, err, info = s:send{ envelope = { from = FROM, to = { TO } }, message = BODY,
      dsn = { notify = "never" } }
    assert.is_nil(res)
    assert.equal("unsupported", info.kind, err)
    s:quit()
    assert.equal(EHLO .. "\r\nQUIT\r\n", finish(srv))
  end)

  it("invalid dsn values are an argument error", function()
    local _, err, info = smtp.send{ host = "127.0.0.1", port = 1, envelope = { from = FROM, to = { TO } },
      message = BODY, dsn = { notify = { "never", "delay" } } }
    assert.equal("argument", info.kind, err)
  end)

  it("8-bit raw message: BODY=8BITMIME when offered, unsupported otherwise", function()
    local raw = "Subject: x\r\n\r\ncaf\195\169\r\n"
    local srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("8BITMIME"),
      hear("MAIL FROM:<" .. FROM .. "> BODY=8BITMIME"), say("250 ok\r\n"), hear("RCPT TO:<" .. TO .. ">"),
      say("250 ok\r\n"), hear("DATA"), say("354 go\r\n"), { read = "data" }, say("250 queued\r\n"), BYE) }
    local s = assert(connect(srv))
    assert.is_table((s:send{ envelope = { from = FROM, to = { TO } }, message = raw }))
    s:quit()
    finish(srv)
    servers.stop_all()

    srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("PIPELINING"), BYE) }
    s = assert(connect(srv))
    local res, err, info = s:send{ envelope = { from = FROM, to = { TO } }, message = raw }
    assert.is_nil(res)
    assert.equal("unsupported", info.kind, err)
    s:quit()
    assert.equal(EHLO .. "\r\nQUIT\r\n", finish(srv))
  end)

  it("8-bit octets streamed to a server without 8BITMIME end the send unsent", function()
    local chunks, i = { "Subject: x\r\n\r\n", "caf\195\169\r\n" }, 0
    local srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("PIPELINING"),
      hear("MAIL FROM:<" .. FROM .. ">"), hear("RCPT TO:<" .. TO .. ">"), hear("DATA"),
      say("250 ok\r\n250 ok\r\n354 go\r\n"), { read = "all" }) }
    local s = assert(connect(srv))
    local res, err, info = s:send{ envelope = { from = FROM, to = { TO } },
      message = function() i = i + 1 return chunks[i] end }
    assert.is_nil(res)
    assert.equal("unsupported", info.kind, err)
    local sent = finish(srv)
    assert.is_nil(sent:find("caf", 1, true))
    assert.is_nil(sent:find("\r\n.\r\n", 1, true), "the data must not be ended")
  end)

  it("non-ASCII addresses use SMTPUTF8, or fail as unsupported without it", function()
    local utf8_to = "j\195\182rg@example.net"
    local srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("8BITMIME", "SMTPUTF8"),
      -- An ASCII message: the UTF-8 envelope needs SMTPUTF8, not 8BITMIME.
      hear("MAIL FROM:<" .. FROM .. "> SMTPUTF8"), say("250 ok\r\n"),
      hear("RCPT TO:<" .. utf8_to .. ">"), say("250 ok\r\n"), hear("DATA"), say("354 go\r\n"),
      { read = "data" }, say("250 queued\r\n"), BYE) }
    local s = assert(connect(srv))
    assert.is_table((s:send{ envelope = { from = FROM, to = { utf8_to } }, message = BODY }))
    s:quit()
    finish(srv)
    servers.stop_all()

    srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("8BITMIME"), BYE) }
    s = assert(connect(srv))
    local res, err, info = s:send{ envelope = { from = FROM, to = { utf8_to } }, message = BODY }
    assert.is_nil(res)
    assert.equal("unsupported", info.kind, err)
    s:quit()
    finish(srv)
  end)

  it("CHUNKING: one BDAT LAST with the exact bytes, no dot-stuffing", function()
    local raw = "Subject: x\r\n\r\n.dot\nbare LF\r\n"
    local framed = "Subject: x\r\n\r\n.dot\r\nbare LF\r\n"
    local srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("PIPELINING", "CHUNKING"),
      hear("MAIL FROM:<" .. FROM .. ">"), hear("RCPT TO:<" .. TO .. ">"),
      say("250 ok\r\n250 ok\r\n"),   -- no chunk before the envelope replies
      hear("BDAT " .. #framed .. " LAST"), { read = "line" }, { read = "line" }, { read = "line" },
      { read = "line" }, say("250 queued\r\n"), BYE) }
    local s = assert(connect(srv))
    local res, err = s:send{ envelope = { from = FROM, to = { TO } }, message = raw }
    assert.is_table(res, err)
    assert.equal(250, res.code)
    s:quit()
    local sent = finish(srv)
    assert.truthy(sent:find("BDAT " .. #framed .. " LAST\r\n" .. framed .. "QUIT\r\n", 1, true))
  end)

  it("chunking = false keeps DATA even when CHUNKING is offered", function()
    local srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("PIPELINING", "CHUNKING"),
      hear("MAIL FROM:<" .. FROM .. ">"), hear("RCPT TO:<" .. TO .. ">"), hear("DATA"),
      say("250 ok\r\n250 ok\r\n354 go\r\n"), { read = "data" }, say("250 queued\r\n"), BYE) }
    local s = assert(connect(srv, { chunking = false }))
    assert.is_table((s:send{ envelope = { from = FROM, to = { TO } }, message = BODY }))
    s:quit()
    finish(srv)
  end)
end)

describe("pipelined submission #socket", function()
  after_each(function() servers.stop_all() end)

  local function jobs(n)
    local list = {}
    for i = 1, n do
      list[i] = { envelope = { from = FROM, to = { TO } }, message = "Subject: " .. i .. "\r\n\r\nbody\r\n" }
    end
    return list
  end

  it("PIPELINING: the next transaction travels with the end of data", function()
    -- The server answers the first end of data only after it has read the
    -- second MAIL: a client that waited for that reply would time out.
    local srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("PIPELINING"),
      hear("MAIL FROM:<" .. FROM .. ">"), hear("RCPT TO:<" .. TO .. ">"), hear("DATA"),
      say("250 ok\r\n250 ok\r\n354 go\r\n"), { read = "data" },
      hear("MAIL FROM:<" .. FROM .. ">"), hear("RCPT TO:<" .. TO .. ">"), hear("DATA"),
      say("250 first queued\r\n250 ok\r\n250 ok\r\n354 go\r\n"), { read = "data" },
      say("250 second queued\r\n"), BYE) }
    local s = assert(connect(srv))
    local results = s:send_many(jobs(2))
    assert.equal(2, #results)
    assert.equal("first queued", results[1].message)
    assert.equal("second queued", results[2].message)
    s:quit()
    finish(srv)
  end)

  it("CHUNKING: a window of transactions in flight before any reply", function()
    local st = { GREET, hear(EHLO), ehlo_reply("PIPELINING", "CHUNKING") }
    for i = 1, 3 do
      if i > 1 then st[#st + 1] = hear("RSET") end
      local msg = "Subject: " .. i .. "\r\n\r\nbody\r\n"
      st[#st + 1] = hear("MAIL FROM:<" .. FROM .. ">")
      st[#st + 1] = hear("RCPT TO:<" .. TO .. ">")
      st[#st + 1] = hear("BDAT " .. #msg .. " LAST")
      st[#st + 1] = { read = "line" }
      st[#st + 1] = { read = "line" }
      st[#st + 1] = { read = "line" }
    end
    -- Only now, with all three messages read, do the replies go out.
    st[#st + 1] = say("250 ok\r\n250 ok\r\n250 q1\r\n" ..
      "250 reset\r\n250 ok\r\n550 5.1.1 no such user\r\n503 5.5.1 no recipients\r\n" ..
      "250 reset\r\n250 ok\r\n250 ok\r\n250 q3\r\n")
    st[#st + 1] = hear("QUIT")
    st[#st + 1] = say("221 bye\r\n")
    local srv = servers.fake{ steps = steps(st) }
    local s = assert(connect(srv, { window = 8 }))
    local results = s:send_many(jobs(3))
    assert.equal("q1", results[1].message)
    assert.equal("recipients", results[2].info.kind, results[2].error)
    assert.equal(550, results[2].info.refused[TO].code)
    assert.equal("q3", results[3].message)
    s:quit()
    finish(srv)
  end)

  it("a message that cannot be prepared fails alone, in its place", function()
    local srv = servers.fake{ steps = steps(GREET, hear(EHLO), ehlo_reply("PIPELINING"),
      hear("MAIL FROM:<" .. FROM .. ">"), hear("RCPT TO:<" .. TO .. ">"), hear("DATA"),
      say("250 ok\r\n250 ok\r\n354 go\r\n"), { read = "data" }, say("250 queued\r\n"), BYE) }
    local s = assert(connect(srv))
    local list = jobs(1)
    table.insert(list, 1, { envelope = { from = FROM, to = { "bad\r\naddress" } }, message = BODY })
    local results = s:send_many(list)
    assert.equal("argument", results[1].info.kind)
    assert.equal("queued", results[2].message)
    s:quit()
    finish(srv)
  end)
end)

describe("LMTP #socket", function()
  after_each(function() servers.stop_all() end)

  it("one reply per accepted recipient after the end of data", function()
    local TO3 = "third@example.net"
    local srv = servers.fake{ steps = steps(GREET, hear("LHLO client.test"), ehlo_reply("PIPELINING"),
      hear("MAIL FROM:<" .. FROM .. ">"), hear("RCPT TO:<" .. TO .. ">"), hear("RCPT TO:<" .. TO2 .. ">"),
      hear("RCPT TO:<" .. TO3 .. ">"), hear("DATA"),
      say("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n354 go\r\n"), { read = "data" },
      say("250 2.0.0 delivered to rcpt\r\n452 4.2.2 mailbox full\r\n"), BYE) }
    local res, err = smtp.send{ host = "127.0.0.1", port = srv.port, protocol = "lmtp", tls = "none",
      helo = "client.test", timeout = 3, envelope = { from = FROM, to = { TO, TO2, TO3 } }, message = BODY }
    assert.is_table(res, err)
    assert.same({ TO }, res.accepted)
    assert.equal(550, res.refused[TO2].code)
    assert.equal(452, res.refused[TO3].code)
    assert.equal(250, res.replies[TO].code)
    assert.equal("4.2.2", res.replies[TO3].enhanced)
    finish(srv)
  end)

  it("over a Unix-domain socket (smtp-sink -L)", function()
    if not servers.available.sink then pending("smtp-sink is not installed") return end
    local sink = servers.sink_unix{ "-L" }
    local res, err = smtp.send{ path = sink.path, protocol = "lmtp", tls = "none", helo = "client.test",
      timeout = 3, envelope = { from = FROM, to = { TO, TO2 } }, message = BODY }
    assert.is_table(res, err)
    assert.same({ TO, TO2 }, res.accepted)
    assert.equal(250, res.replies[TO2].code)
  end)

  it("fails only when every recipient's final reply fails", function()
    local srv = servers.fake{ steps = steps(GREET, hear("LHLO client.test"), ehlo_reply("PIPELINING"),
      hear("MAIL FROM:<" .. FROM .. ">"), hear("RCPT TO:<" .. TO .. ">"), hear("RCPT TO:<" .. TO2 .. ">"),
      hear("DATA"), say("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"), { read = "data" },
      say("550 5.2.1 disabled\r\n451 4.3.0 try later\r\n"), BYE) }
    local res, err, info = smtp.send{ host = "127.0.0.1", port = srv.port, protocol = "lmtp",
      tls = "none", helo = "client.test", timeout = 3,
      envelope = { from = FROM, to = { TO, TO2 } }, message = BODY }
    assert.is_nil(res)
    assert.equal("data", info.kind, err)
    assert.equal(550, info.replies[TO].code)
    assert.equal(451, info.replies[TO2].code)
    finish(srv)
  end)
end)
