-- Specs for the sans-I/O engine (smtp.core.engine), driven without sockets:
-- a scripted "server" hands the engine its replies whenever it asks for
-- input, and everything the engine writes is collected, so each spec states
-- the exact bytes on the wire and the exact events, in their order.
--
-- Most specs also replay their script with every reply split at every
-- offset (and one byte at a time): a TCP read boundary must never change
-- what the engine does.

local core = require "smtp.core"

-- ---- server replies used by many specs -------------------------------------

local GREETING = "220 mx.example ESMTP ready\r\n"
local EHLO_PIPELINING = "250-mx.example hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
local EHLO_SEQUENTIAL = "250-mx.example hello\r\n250 8BITMIME\r\n"
local OK = "250 2.0.0 ok\r\n"

local HELLO_PIPELINING_LOG = {
  'reply greeting 220 "mx.example ESMTP ready"',
  "> EHLO client.example\r\n",
  'reply ehlo 250 "mx.example hello\\nPIPELINING\\nSIZE 1000\\n8BITMIME"',
  'done ehlo 250 "mx.example hello\\nPIPELINING\\nSIZE 1000\\n8BITMIME"',
}

local HELLO_SEQUENTIAL_LOG = {
  'reply greeting 220 "mx.example ESMTP ready"',
  "> EHLO client.example\r\n",
  'reply ehlo 250 "mx.example hello\\n8BITMIME"',
  'done ehlo 250 "mx.example hello\\n8BITMIME"',
}

-- ---- small list helpers ----------------------------------------------------

local function concat(...)
  local all = {}
  for _, list in ipairs({ ... }) do
    for _, item in ipairs(list) do all[#all + 1] = item end
  end
  return all
end

-- ---- the scripted conversation ---------------------------------------------

-- One line per event: kind, command, #recipient, code, enhanced code,
-- "text" (line breaks shown as \n), fail=..., error=...
local function describe_event(kind, cmd, index, code, enhanced, text, fail, err)
  local words = { kind }
  local function add(word) if word ~= nil then words[#words + 1] = word end end
  add(cmd)
  add(index and ("#" .. index))
  add(code and tostring(code))
  add(enhanced)
  add(text and ('"' .. text:gsub("\n", "\\n") .. '"'))
  add(fail and ("fail=" .. fail))
  add(err and ("error=" .. err))
  return table.concat(words, " ")
end

local Conversation = {}
Conversation.__index = Conversation

-- chunks: the server's bytes, each fed when the engine asks for input.
local function new_conversation(chunks, limits)
  return setmetatable({ eng = core.engine(limits), chunks = chunks, fed = 0, log = {} },
    Conversation)
end

function Conversation:note(entry)
  self.log[#self.log + 1] = entry
end

-- "Sends" whatever the engine has written: logged as "> bytes".
function Conversation:flush()
  local out = self.eng:output()
  if #out > 0 then
    self:note("> " .. out)
    self.eng:consumed(#out)
  end
end

-- Runs the engine until it stops for anything but a reply; logs every event
-- (except the asks for input) and returns the last kind. Returns
-- "need_input" when the script has no more bytes.
function Conversation:run()
  while true do
    self:flush()
    local kind, cmd, index, code, enhanced, text, fail, err = self.eng:next()
    if kind == "need_input" then
      if self.eng:pending() == 0 then
        local chunk = self.chunks[self.fed + 1]
        if chunk == nil then
          self:note("need_input")
          return kind
        end
        self.fed = self.fed + 1
        assert(self.eng:feed(chunk))
      end
    else
      self:note(describe_event(kind, cmd, index, code, enhanced, text, fail, err))
      if kind ~= "reply" then return kind end
    end
  end
end

-- How a script's replies are cut into chunks.
local function whole(_, reply) return { reply } end

local function split_one(which, at)
  return function(i, reply)
    if i ~= which then return { reply } end
    return { reply:sub(1, at), reply:sub(at + 1) }
  end
end

local function byte_by_byte(_, reply)
  local bytes = {}
  for i = 1, #reply do bytes[i] = reply:sub(i, i) end
  return bytes
end

-- Plays client (a function of a conversation) against the replies cut by
-- chunker; returns the log.
local function play(replies, client, chunker, limits)
  local chunks = {}
  for i, reply in ipairs(replies) do
    for _, chunk in ipairs(chunker(i, reply)) do chunks[#chunks + 1] = chunk end
  end
  local c = new_conversation(chunks, limits)
  client(c)
  return c.log
end

-- Plays the script whole, then with each reply split at every offset and
-- byte by byte, and asserts the same log every time. Returns the log.
-- opts.limits: engine limits; opts.keep_split(i, at): false to skip a
-- split that changes the meaning (bytes glued to an earlier reply);
-- opts.bytewise = false to skip the byte-by-byte run.
local function same_at_every_split(replies, client, opts)
  opts = opts or {}
  local reference = play(replies, client, whole, opts.limits)
  for i, reply in ipairs(replies) do
    for at = 1, #reply - 1 do
      if not opts.keep_split or opts.keep_split(i, at) then
        local log = play(replies, client, split_one(i, at), opts.limits)
        assert.same(reference, log, ("reply %d split after byte %d"):format(i, at))
      end
    end
  end
  if opts.bytewise ~= false then
    assert.same(reference, play(replies, client, byte_by_byte, opts.limits), "byte by byte")
  end
  return reference
end

-- ---- client sides ----------------------------------------------------------

local function hello(c, name)
  assert(c.eng:hello(name or "client.example"))
  return c:run()
end

-- One transaction: MAIL, a RCPT per recipient, DATA, and the body if the
-- server asks for it.
local function transaction(c, recipients, body, size)
  assert(c.eng:mail("sender@example.org", size or 0))
  for _, to in ipairs(recipients) do assert(c.eng:rcpt(to)) end
  assert(c.eng:data())
  if c:run() == "need_body" then
    assert(c.eng:body(body))
    assert(c.eng:body_end())
    c:run()
  end
end

-- A client that says hello, then runs one transaction.
local function send_message(recipients, body, size)
  return function(c)
    hello(c)
    transaction(c, recipients, body, size)
  end
end

local function sequential(client)
  return function(c)
    c.eng:set_pipelining(false)
    client(c)
  end
end

-- The error code of a refused call (asserting that it was refused).
local function refusal(ok, code)
  assert.is_nil(ok)
  return code
end

-- Every write of commands (not the message after need_body) holds exactly
-- one command line.
local function assert_one_command_per_write(log)
  local in_body = false
  for _, entry in ipairs(log) do
    if entry == "need_body" then
      in_body = true
    elseif entry:sub(1, 2) == "> " and in_body then
      in_body = false
    elseif entry:sub(1, 2) == "> " then
      local _, line_ends = entry:gsub("\r\n", "")
      assert.equal(1, line_ends, "one command per write: " .. entry)
    end
  end
end

-- ---- specs -----------------------------------------------------------------

describe("engine greeting and hello", function()
  it("waits for the 220 greeting before sending EHLO", function()
    local log = same_at_every_split({ GREETING, EHLO_PIPELINING }, function(c)
      assert(c.eng:hello("client.example"))
      c:note("pending before the greeting: " .. c.eng:pending())
      c:run()
      c:run()
    end)
    assert.same(concat({ "pending before the greeting: 0" }, HELLO_PIPELINING_LOG, { "idle" }), log)
  end)

  it("parses capabilities: keywords case-insensitive, parameters kept", function()
    local ehlo = "250-mx.example greets you\r\n250-SIZE 1000\r\n250-AUTH PLAIN LOGIN\r\n" ..
      "250-pipelining\r\n250-8bitmime\r\n250 \r\n"
    local log = same_at_every_split({ GREETING, ehlo }, function(c)
      hello(c)
      local caps = c.eng:capabilities()
      local names = {}
      for name, value in pairs(caps) do names[#names + 1] = name .. "=" .. tostring(value) end
      table.sort(names)
      c:note("caps: " .. table.concat(names, ", "))
      c:note(("max size: %d"):format(c.eng:max_size()))
    end)
    assert.same({
      'reply greeting 220 "mx.example ESMTP ready"',
      "> EHLO client.example\r\n",
      'reply ehlo 250 "mx.example greets you\\nSIZE 1000\\nAUTH PLAIN LOGIN\\npipelining\\n8bitmime\\n"',
      'done ehlo 250 "mx.example greets you\\nSIZE 1000\\nAUTH PLAIN LOGIN\\npipelining\\n8bitmime\\n"',
      "caps: 8BITMIME=true, AUTH=PLAIN LOGIN, PIPELINING=true, SIZE=1000",
      "max size: 1000",
    }, log)
  end)

  it("uses a lowercase pipelining keyword", function()
    local ehlo = "250-mx.example\r\n250 pipelining\r\n"
    local log = play({ GREETING, ehlo }, function(c)
      hello(c)
      assert(c.eng:mail("a@example.org"))
      assert(c.eng:rcpt("b@example.org"))
      c:flush()
    end, whole)
    assert.equal("> MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n", log[#log])
  end)

  it("has no capabilities from a one-line EHLO reply", function()
    local log = play({ GREETING, "250 mx.example\r\n" }, function(c)
      hello(c)
      c:note("caps: " .. (next(c.eng:capabilities()) == nil and "none" or "some"))
      c:note(("max size: %d"):format(c.eng:max_size()))
    end, whole)
    assert.same({ "caps: none", "max size: 0" }, { log[#log - 1], log[#log] })
  end)

  for _, code in ipairs({ 500, 502, 504, 550 }) do
    it("falls back to HELO when EHLO gets " .. code, function()
      local ehlo_refusal = code .. " 5.5.1 no EHLO here\r\n"
      local log = same_at_every_split({ GREETING, ehlo_refusal, "250 mx.example\r\n" }, function(c)
        hello(c)
        c:note("capabilities: " .. tostring(c.eng:capabilities()))
      end)
      assert.same({
        'reply greeting 220 "mx.example ESMTP ready"',
        "> EHLO client.example\r\n",
        "reply ehlo " .. code .. ' 5.5.1 "5.5.1 no EHLO here"',
        "> HELO client.example\r\n",
        'reply helo 250 "mx.example"',
        'done helo 250 "mx.example"',
        "capabilities: nil",
      }, log)
    end)
  end

  it("fails with hello when HELO is refused too", function()
    local log = same_at_every_split({ GREETING, "502 no\r\n", "501 no either\r\n" }, hello)
    assert.same({
      'reply greeting 220 "mx.example ESMTP ready"',
      "> EHLO client.example\r\n",
      'reply ehlo 502 "no"',
      "> HELO client.example\r\n",
      'reply helo 501 "no either"',
      'failed helo 501 "no either" fail=hello',
    }, log)
  end)

  it("does not fall back to HELO on 421: the server is closing", function()
    local log = same_at_every_split({ GREETING, "421 4.3.2 shutting down\r\n" }, function(c)
      hello(c)
      c:note("dead: " .. tostring(c.eng:dead()))
    end)
    assert.same({
      'reply greeting 220 "mx.example ESMTP ready"',
      "> EHLO client.example\r\n",
      'reply ehlo 421 4.3.2 "4.3.2 shutting down"',
      'failed ehlo 421 4.3.2 "4.3.2 shutting down" fail=closing',
      "dead: true",
    }, log)
  end)

  it("does not fall back to HELO on 554", function()
    local log = same_at_every_split({ GREETING, "554 5.7.1 go away\r\n" }, hello)
    assert.same({
      'reply greeting 220 "mx.example ESMTP ready"',
      "> EHLO client.example\r\n",
      'reply ehlo 554 5.7.1 "5.7.1 go away"',
      'failed ehlo 554 5.7.1 "5.7.1 go away" fail=hello',
    }, log)
  end)

  it("fails with greeting on a 554 greeting and sends nothing", function()
    local log = same_at_every_split({ "554 5.3.2 not today\r\n" }, function(c)
      hello(c)
      c:note("dead: " .. tostring(c.eng:dead()))
    end)
    assert.same({
      'reply greeting 554 5.3.2 "5.3.2 not today"',
      'failed greeting 554 5.3.2 "5.3.2 not today" fail=greeting',
      "dead: false",
    }, log)
  end)

  it("can still QUIT after a 554 greeting", function()
    local log = play({ "554 not today\r\n", "221 bye\r\n" }, function(c)
      hello(c)
      assert(c.eng:quit())
      c:run()
    end, whole)
    assert.same({
      'reply greeting 554 "not today"',
      'failed greeting 554 "not today" fail=greeting',
      "> QUIT\r\n",
      'reply quit 221 "bye"',
      'done quit 221 "bye"',
    }, log)
  end)

  it("does not wait for a second greeting when hello is tried again after a 554", function()
    local log = play({ "554 not today\r\n", "503 5.5.1 only QUIT\r\n" }, function(c)
      hello(c)
      hello(c)
    end, whole)
    assert.same({
      'reply greeting 554 "not today"',
      'failed greeting 554 "not today" fail=greeting',
      "> EHLO client.example\r\n",
      'reply ehlo 503 5.5.1 "5.5.1 only QUIT"',
      'failed ehlo 503 5.5.1 "5.5.1 only QUIT" fail=hello',
    }, log)
  end)

  it("fails with greeting on a 421 greeting and is dead", function()
    local log = same_at_every_split({ "421 busy\r\n" }, function(c)
      hello(c)
      c:note("dead: " .. tostring(c.eng:dead()))
    end)
    assert.same({
      'reply greeting 421 "busy"',
      'failed greeting 421 "busy" fail=greeting',
      "dead: true",
    }, log)
  end)

  for name, greeting in pairs({
    ["garbage"] = "hello there\r\n",
    ["an HTTP answer"] = "HTTP/1.1 400 Bad Request\r\n",
  }) do
    it("fails with protocol on " .. name .. " for a greeting and sends nothing", function()
      local log = same_at_every_split({ greeting }, function(c)
        hello(c)
        c:note("dead: " .. tostring(c.eng:dead()))
      end)
      assert.same({
        "failed greeting fail=protocol error=protocol error",
        "dead: true",
      }, log)
    end)
  end

  for _, case in ipairs({
    { "250 hello\r\n", 'reply greeting 250 "hello"' },
    { "250\r\n", 'reply greeting 250 ""' },
    { "354 what\r\n", 'reply greeting 354 "what"' },
  }) do
    local greeting, reply_event = case[1], case[2]
    it("fails with protocol on the greeting " .. greeting:sub(1, -3) .. " and sends nothing", function()
      local log = same_at_every_split({ greeting }, function(c)
        hello(c)
        c:note("dead: " .. tostring(c.eng:dead()))
      end)
      assert.same({
        reply_event,
        "failed greeting fail=protocol error=protocol error",
        "dead: true",
      }, log)
    end)
  end

  it("accepts bare LF line ends in replies", function()
    local log = same_at_every_split(
      { "220 mx.example ESMTP ready\n", "250-mx.example hello\n250-PIPELINING\n250-SIZE 1000\n250 8BITMIME\n" },
      hello)
    assert.same(HELLO_PIPELINING_LOG, log)
  end)

  it("refuses EHLO names with control characters or spaces, writing nothing", function()
    for _, name in ipairs({ "a\r\nMAIL FROM:<x>", "a\rb", "a\nb", "a\0b", "a\tb", "a\127b", "a b", "" }) do
      local eng = core.engine()
      assert.equal("argument", refusal(eng:hello(name)))
      assert.equal(0, eng:pending())
      assert.equal("idle", eng:next())
    end
  end)
end)

describe("engine reply parsing", function()
  local function hello_with_ehlo_reply(ehlo, opts)
    return same_at_every_split({ GREETING, ehlo }, function(c)
      hello(c)
      c:note("dead: " .. tostring(c.eng:dead()))
    end, opts)
  end

  local PROTOCOL_FAILURE = {
    'reply greeting 220 "mx.example ESMTP ready"',
    "> EHLO client.example\r\n",
    "failed ehlo fail=protocol error=protocol error",
    "dead: true",
  }

  local LIMIT_FAILURE = {
    'reply greeting 220 "mx.example ESMTP ready"',
    "> EHLO client.example\r\n",
    "failed ehlo fail=protocol error=size limit exceeded",
    "dead: true",
  }

  it("refuses a multiline reply whose lines carry different codes", function()
    assert.same(PROTOCOL_FAILURE, hello_with_ehlo_reply("250-mx.example\r\n251 PIPELINING\r\n"))
  end)

  for name, line in pairs({
    ["letters for digits"] = "25O ok\r\n",
    ["a fourth digit"] = "2500 ok\r\n",
    ["a 1xx code"] = "150 ok\r\n",
    ["a 6xx code"] = "650 ok\r\n",
    ["two digits"] = "25\r\n",
    ["a tab after the code"] = "250\tok\r\n",
    ["an empty line"] = "\r\n",
  }) do
    it("refuses a line with " .. name, function()
      assert.same(PROTOCOL_FAILURE, hello_with_ehlo_reply(line))
    end)
  end

  it("accepts a reply line of exactly max_line octets", function()
    local line = "250 " .. ("x"):rep(508) .. "\r\n"
    local log = hello_with_ehlo_reply(line, { limits = { max_line = 512 } })
    assert.equal("done ehlo 250 \"" .. ("x"):rep(508) .. '"', log[4])
    assert.equal("dead: false", log[5])
  end)

  it("refuses a reply line longer than max_line", function()
    local line = "250 " .. ("x"):rep(509) .. "\r\n"
    assert.same(LIMIT_FAILURE, hello_with_ehlo_reply(line, { limits = { max_line = 512 } }))
  end)

  it("refuses an endless line as soon as it passes max_line, with bounded memory", function()
    local eng = core.engine({ max_line = 512 })
    assert(eng:hello("client.example"))
    assert(eng:feed(GREETING))
    assert.equal("reply", eng:next())
    assert.equal("need_input", eng:next())
    eng:consumed(eng:pending())
    -- 512 octets and a CR may still end well; one octet more cannot.
    assert(eng:feed(("x"):rep(513)))
    assert.equal("need_input", eng:next())
    assert(eng:feed("x"))
    assert.same({ "failed", "ehlo", nil, nil, nil, nil, "protocol", "size limit exceeded" }, { eng:next() })
    assert.is_true(eng:dead())
    -- A dead engine's input buffer is bounded too.
    local ok, code = eng:feed(("x"):rep(1000000))
    assert.same({ nil, "limit" }, { ok, code })
  end)

  it("accepts max_lines lines and refuses one more", function()
    local three = "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
    local accepted = hello_with_ehlo_reply(three, { limits = { max_lines = 3 } })
    assert.equal('done ehlo 250 "mx.example\\nPIPELINING\\nSIZE 1000"', accepted[4])
    local four = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
    assert.same(LIMIT_FAILURE, hello_with_ehlo_reply(four, { limits = { max_lines = 3 } }))
  end)

  it("refuses replies that arrive before their command was sent", function()
    -- The extra "250 ok" comes with the greeting, before EHLO could be sent.
    -- (Cut exactly between the two replies, it would be an honest answer.)
    local boundary = #GREETING
    local log = same_at_every_split({ GREETING .. "250 ok\r\n" }, function(c)
      hello(c)
      c:note("dead: " .. tostring(c.eng:dead()))
    end, { keep_split = function(_, at) return at ~= boundary end, bytewise = false })
    assert.same({
      'reply greeting 220 "mx.example ESMTP ready"',
      "failed none fail=protocol error=protocol error",
      "dead: true",
    }, log)
  end)

  it("refuses bytes that arrive after a complete exchange", function()
    local eng = core.engine()
    assert(eng:hello("client.example"))
    assert(eng:feed(GREETING))
    assert.equal("reply", eng:next())
    assert.equal("need_input", eng:next())
    eng:consumed(eng:pending())
    assert(eng:feed("250 mx.example\r\n"))
    assert.equal("reply", eng:next())
    assert.equal("done", eng:next())
    assert.equal("idle", eng:next())
    assert(eng:feed("250 surprise\r\n"))
    assert.same({ "failed", "none", nil, nil, nil, nil, "protocol", "protocol error" }, { eng:next() })
    assert.is_true(eng:dead())
  end)

  it("reports no reply code with a protocol error met while draining a refusal", function()
    local replies = { GREETING, EHLO_PIPELINING, "553 bad sender\r\nbogus\r\n" }
    local log = same_at_every_split(replies, function(c)
      send_message({ "a@example.org" }, "x", 1)(c)
      c:note("dead: " .. tostring(c.eng:dead()))
    end)
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> MAIL FROM:<sender@example.org> SIZE=1\r\nRCPT TO:<a@example.org>\r\nDATA\r\n",
      'reply mail 553 "bad sender"',
      "failed rcpt fail=protocol error=protocol error",
      "dead: true",
    }), log)
  end)

  it("keeps the outcome but kills the session when extra bytes follow the last reply", function()
    local log = play({ GREETING, "250 mx.example\r\n250 extra\r\n" }, function(c)
      hello(c)
      c:note("dead: " .. tostring(c.eng:dead()))
      c:note(c.eng:next())
    end, whole)
    assert.same({
      'reply greeting 220 "mx.example ESMTP ready"',
      "> EHLO client.example\r\n",
      'reply ehlo 250 "mx.example"',
      'done ehlo 250 "mx.example"',
      "dead: true",
      "idle",
    }, log)
  end)
end)

describe("engine transactions", function()
  it("pipelines MAIL, RCPT, RCPT and DATA in one write", function()
    local replies = { GREETING, EHLO_PIPELINING,
      OK .. "250 2.1.5 a ok\r\n250 2.1.5 b ok\r\n354 go ahead\r\n", "250 2.0.0 queued as 1\r\n" }
    local log = same_at_every_split(replies, send_message({ "a@example.org", "b@example.org" },
      "Subject: hi\r\n\r\nhello\r\n", 25))
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> MAIL FROM:<sender@example.org> SIZE=25\r\nRCPT TO:<a@example.org>\r\n" ..
        "RCPT TO:<b@example.org>\r\nDATA\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      'reply rcpt #1 250 2.1.5 "2.1.5 a ok"',
      'reply rcpt #2 250 2.1.5 "2.1.5 b ok"',
      'reply data 354 "go ahead"',
      "need_body",
      "> Subject: hi\r\n\r\nhello\r\n.\r\n",
      'reply dot 250 2.0.0 "2.0.0 queued as 1"',
      'done dot 250 2.0.0 "2.0.0 queued as 1"',
    }), log)
  end)

  it("sends one command at a time without PIPELINING", function()
    local replies = { GREETING, EHLO_SEQUENTIAL, OK, "250 a ok\r\n", "250 b ok\r\n",
      "354 go ahead\r\n", "250 queued\r\n" }
    local log = same_at_every_split(replies, send_message({ "a@example.org", "b@example.org" },
      "hello\r\n", 7))
    assert.same(concat(HELLO_SEQUENTIAL_LOG, {
      "> MAIL FROM:<sender@example.org>\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      "> RCPT TO:<a@example.org>\r\n",
      'reply rcpt #1 250 "a ok"',
      "> RCPT TO:<b@example.org>\r\n",
      'reply rcpt #2 250 "b ok"',
      "> DATA\r\n",
      'reply data 354 "go ahead"',
      "need_body",
      "> hello\r\n.\r\n",
      'reply dot 250 "queued"',
      'done dot 250 "queued"',
    }), log)
    assert_one_command_per_write(log)
  end)

  it("sends one command at a time after set_pipelining(false)", function()
    local replies = { GREETING, EHLO_PIPELINING, OK, "250 a ok\r\n", "354 go ahead\r\n",
      "250 queued\r\n" }
    local log = same_at_every_split(replies,
      sequential(send_message({ "a@example.org" }, "hello\r\n", 7)))
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> MAIL FROM:<sender@example.org> SIZE=7\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      "> RCPT TO:<a@example.org>\r\n",
      'reply rcpt #1 250 "a ok"',
      "> DATA\r\n",
      'reply data 354 "go ahead"',
      "need_body",
      "> hello\r\n.\r\n",
      'reply dot 250 "queued"',
      'done dot 250 "queued"',
    }), log)
    assert_one_command_per_write(log)
  end)

  it("tells which command a reply is awaited for", function()
    local eng = core.engine()
    assert.equal("none", eng:waiting_for())
    assert(eng:hello("client.example"))
    assert.equal("greeting", eng:waiting_for())
  end)

  it("adds SIZE= only when the server advertised SIZE", function()
    local function first_mail(ehlo, size)
      local log = play({ GREETING, ehlo }, function(c)
        hello(c)
        assert(c.eng:mail("sender@example.org", size))
        c:flush()
      end, whole)
      return log[#log]
    end
    assert.equal("> MAIL FROM:<sender@example.org> SIZE=999\r\n", first_mail(EHLO_PIPELINING, 999))
    assert.equal("> MAIL FROM:<sender@example.org>\r\n", first_mail(EHLO_PIPELINING, 0))
    assert.equal("> MAIL FROM:<sender@example.org>\r\n", first_mail(EHLO_SEQUENTIAL, 999))
    assert.equal("> MAIL FROM:<sender@example.org>\r\n", first_mail("250 mx.example\r\n", 999))
  end)

  it("appends MAIL and RCPT parameters", function()
    local log = play({ GREETING, EHLO_PIPELINING }, function(c)
      hello(c)
      assert(c.eng:mail("sender@example.org", 10, "BODY=8BITMIME"))
      assert(c.eng:rcpt("a@example.org", "NOTIFY=NEVER"))
      c:flush()
    end, whole)
    assert.equal("> MAIL FROM:<sender@example.org> SIZE=10 BODY=8BITMIME\r\n" ..
      "RCPT TO:<a@example.org> NOTIFY=NEVER\r\n", log[#log])
  end)

  it("refuses a message over the SIZE limit before writing anything", function()
    local log = play({ GREETING, EHLO_PIPELINING }, function(c)
      hello(c)
      c:note(refusal(c.eng:mail("sender@example.org", 1001)) .. ", pending " .. c.eng:pending())
      assert(c.eng:mail("sender@example.org", 1000))
      c:flush()
    end, whole)
    assert.same({ "size, pending 0", "> MAIL FROM:<sender@example.org> SIZE=1000\r\n" },
      { log[#log - 1], log[#log] })
  end)

  it("goes on when some recipients are refused", function()
    local replies = { GREETING, EHLO_PIPELINING,
      OK .. "550 5.1.1 no such user\r\n250 ok\r\n451 4.3.0 later\r\n354 go\r\n", "250 queued\r\n" }
    local log = same_at_every_split(replies,
      send_message({ "a@example.org", "b@example.org", "c@example.org" }, "x", 1))
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> MAIL FROM:<sender@example.org> SIZE=1\r\nRCPT TO:<a@example.org>\r\n" ..
        "RCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      'reply rcpt #1 550 5.1.1 "5.1.1 no such user"',
      'reply rcpt #2 250 "ok"',
      'reply rcpt #3 451 4.3.0 "4.3.0 later"',
      'reply data 354 "go"',
      "need_body",
      "> x\r\n.\r\n",
      'reply dot 250 "queued"',
      'done dot 250 "queued"',
    }), log)
  end)

  it("fails with recipients and never sends DATA when all are refused (sequential)", function()
    local replies = { GREETING, EHLO_SEQUENTIAL, OK, "550 no a\r\n", "550 no b\r\n" }
    local log = same_at_every_split(replies,
      send_message({ "a@example.org", "b@example.org" }, "never sent", 10))
    assert.same(concat(HELLO_SEQUENTIAL_LOG, {
      "> MAIL FROM:<sender@example.org>\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      "> RCPT TO:<a@example.org>\r\n",
      'reply rcpt #1 550 "no a"',
      "> RCPT TO:<b@example.org>\r\n",
      'reply rcpt #2 550 "no b"',
      'failed rcpt 550 "no b" fail=recipients',
    }), log)
  end)

  it("drains the DATA reply when all pipelined recipients are refused", function()
    local replies = { GREETING, EHLO_PIPELINING,
      OK .. "550 no a\r\n550 no b\r\n554 5.5.1 no valid recipients\r\n" }
    local log = same_at_every_split(replies,
      send_message({ "a@example.org", "b@example.org" }, "never sent", 10))
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> MAIL FROM:<sender@example.org> SIZE=10\r\nRCPT TO:<a@example.org>\r\n" ..
        "RCPT TO:<b@example.org>\r\nDATA\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      'reply rcpt #1 550 "no a"',
      'reply rcpt #2 550 "no b"',
      'reply data 554 5.5.1 "5.5.1 no valid recipients"',
      'failed rcpt 550 "no b" fail=recipients',
    }), log)
  end)

  it("ends the data at once when a pipelined server wrongly says 354 after refusing all", function()
    local replies = { GREETING, EHLO_PIPELINING,
      OK .. "550 no a\r\n354 go ahead anyway\r\n", "250 empty message taken\r\n" }
    local log = same_at_every_split(replies, send_message({ "a@example.org" }, "never sent", 10))
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> MAIL FROM:<sender@example.org> SIZE=10\r\nRCPT TO:<a@example.org>\r\nDATA\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      'reply rcpt #1 550 "no a"',
      'reply data 354 "go ahead anyway"',
      "> .\r\n",
      'reply dot 250 "empty message taken"',
      'failed rcpt 550 "no a" fail=recipients',
    }), log)
  end)

  it("fails with sender when MAIL is refused, then starts the next transaction with RSET", function()
    local replies = { GREETING, EHLO_SEQUENTIAL, "553 5.1.8 bad sender\r\n",
      "250 reset\r\n", OK, "250 a ok\r\n", "354 go\r\n", "250 queued\r\n" }
    local log = same_at_every_split(replies, function(c)
      send_message({ "a@example.org" }, "x")(c)
      transaction(c, { "a@example.org" }, "x")
    end)
    assert.same(concat(HELLO_SEQUENTIAL_LOG, {
      "> MAIL FROM:<sender@example.org>\r\n",
      'reply mail 553 5.1.8 "5.1.8 bad sender"',
      'failed mail 553 5.1.8 "5.1.8 bad sender" fail=sender',
      "> RSET\r\n",
      'reply rset 250 "reset"',
      "> MAIL FROM:<sender@example.org>\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      "> RCPT TO:<a@example.org>\r\n",
      'reply rcpt #1 250 "a ok"',
      "> DATA\r\n",
      'reply data 354 "go"',
      "need_body",
      "> x\r\n.\r\n",
      'reply dot 250 "queued"',
      'done dot 250 "queued"',
    }), log)
  end)

  it("pipelines the RSET with the next transaction", function()
    local replies = { GREETING, EHLO_PIPELINING,
      "553 bad sender\r\n503 no mail\r\n503 no mail\r\n",
      "250 reset\r\n" .. OK .. "250 a ok\r\n354 go\r\n", "250 queued\r\n" }
    local log = same_at_every_split(replies, function(c)
      send_message({ "a@example.org" }, "x", 1)(c)
      transaction(c, { "a@example.org" }, "y", 1)
    end)
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> MAIL FROM:<sender@example.org> SIZE=1\r\nRCPT TO:<a@example.org>\r\nDATA\r\n",
      'reply mail 553 "bad sender"',
      'reply rcpt #1 503 "no mail"',
      'reply data 503 "no mail"',
      'failed mail 553 "bad sender" fail=sender',
      "> RSET\r\nMAIL FROM:<sender@example.org> SIZE=1\r\nRCPT TO:<a@example.org>\r\nDATA\r\n",
      'reply rset 250 "reset"',
      'reply mail 250 2.0.0 "2.0.0 ok"',
      'reply rcpt #1 250 "a ok"',
      'reply data 354 "go"',
      "need_body",
      "> y\r\n.\r\n",
      'reply dot 250 "queued"',
      'done dot 250 "queued"',
    }), log)
  end)

  it("fails with data when DATA is refused", function()
    local replies = { GREETING, EHLO_SEQUENTIAL, OK, "250 a ok\r\n", "554 5.3.4 no data today\r\n" }
    local log = same_at_every_split(replies, send_message({ "a@example.org" }, "x", 1))
    assert.same(concat(HELLO_SEQUENTIAL_LOG, {
      "> MAIL FROM:<sender@example.org>\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      "> RCPT TO:<a@example.org>\r\n",
      'reply rcpt #1 250 "a ok"',
      "> DATA\r\n",
      'reply data 554 5.3.4 "5.3.4 no data today"',
      'failed data 554 5.3.4 "5.3.4 no data today" fail=data',
    }), log)
  end)

  it("fails with data when the end of data is refused", function()
    local replies = { GREETING, EHLO_PIPELINING,
      OK .. "250 a ok\r\n354 go\r\n", "554 5.7.1 spam\r\n" }
    local log = same_at_every_split(replies, send_message({ "a@example.org" }, "buy now", 7))
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> MAIL FROM:<sender@example.org> SIZE=7\r\nRCPT TO:<a@example.org>\r\nDATA\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      'reply rcpt #1 250 "a ok"',
      'reply data 354 "go"',
      "need_body",
      "> buy now\r\n.\r\n",
      'reply dot 554 5.7.1 "5.7.1 spam"',
      'failed dot 554 5.7.1 "5.7.1 spam" fail=data',
    }), log)
  end)

  it("fails with closing on a 421 in the middle of a transaction", function()
    local replies = { GREETING, EHLO_SEQUENTIAL, OK, "421 4.4.2 timeout, bye\r\n" }
    local log = same_at_every_split(replies, function(c)
      send_message({ "a@example.org", "b@example.org" }, "x", 1)(c)
      c:note("dead: " .. tostring(c.eng:dead()))
    end)
    assert.same(concat(HELLO_SEQUENTIAL_LOG, {
      "> MAIL FROM:<sender@example.org>\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      "> RCPT TO:<a@example.org>\r\n",
      'reply rcpt #1 421 4.4.2 "4.4.2 timeout, bye"',
      'failed rcpt 421 4.4.2 "4.4.2 timeout, bye" fail=closing',
      "dead: true",
    }), log)
  end)

  it("refuses addresses with control characters or angle brackets, writing nothing", function()
    local bad = { "a\r\nRCPT TO:<evil@example.org>", "a\rb@example.org", "a\nb@example.org",
      "a\0b@example.org", "a\tb@example.org", "a\27b@example.org", "a\127@example.org",
      "a>b@example.org", "<a@example.org", "a@example.org>" }
    local c = new_conversation({ GREETING, EHLO_PIPELINING })
    hello(c)
    for _, address in ipairs(bad) do
      assert.equal("argument", refusal(c.eng:mail(address)))
      assert.equal(0, c.eng:pending())
    end
    assert.equal("argument", refusal(c.eng:mail("sender@example.org", 0, "X=\r\nRSET")))
    assert.equal("argument", refusal(c.eng:mail("sender@example.org", 0, "X=\0")))
    assert(c.eng:mail("sender@example.org"))
    local written = c.eng:pending()
    for _, address in ipairs(bad) do
      assert.equal("argument", refusal(c.eng:rcpt(address)))
      assert.equal(written, c.eng:pending())
    end
    assert.equal("argument", refusal(c.eng:rcpt("")))
    assert.equal("argument", refusal(c.eng:rcpt("a@example.org", "NOTIFY=\nNEVER")))
    assert.equal(written, c.eng:pending())
  end)
end)

describe("engine LMTP", function()
  it("takes one reply per accepted recipient after the end of data (RFC 2033 4.2)", function()
    local lhlo = "250-mx.example\r\n250 PIPELINING\r\n"
    local log = same_at_every_split({ GREETING, lhlo,
      OK .. OK .. "550 5.1.1 unknown\r\n" .. OK .. "354 go\r\n",
      "250 2.0.0 a delivered\r\n452 4.2.2 c over quota\r\n" },
      function(c)
        assert(c.eng:hello("client.example", true))
        c:run()
        transaction(c, { "a@x.example", "b@x.example", "c@x.example" }, "hi\r\n")
      end)
    assert.same({
      'reply greeting 220 "mx.example ESMTP ready"',
      "> LHLO client.example\r\n",
      'reply lhlo 250 "mx.example\\nPIPELINING"',
      'done lhlo 250 "mx.example\\nPIPELINING"',
      "> MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\n" ..
        "RCPT TO:<c@x.example>\r\nDATA\r\n",
      'reply mail 250 2.0.0 "2.0.0 ok"',
      'reply rcpt #1 250 2.0.0 "2.0.0 ok"',
      'reply rcpt #2 550 5.1.1 "5.1.1 unknown"',
      'reply rcpt #3 250 2.0.0 "2.0.0 ok"',
      'reply data 354 "go"',
      "need_body",
      "> hi\r\n.\r\n",
      'reply dot #1 250 2.0.0 "2.0.0 a delivered"',
      'reply dot #2 452 4.2.2 "4.2.2 c over quota"',
      'done dot 250 2.0.0 "2.0.0 a delivered"',
    }, log)
  end)
end)

describe("engine STARTTLS", function()
  local EHLO_TLS = "250-mx.example\r\n250-STARTTLS\r\n250 PIPELINING\r\n"

  it("drops bytes received after the 220 and forgets the capabilities", function()
    local injected = "220 go ahead\r\n250-evil\r\n250 AUTH PLAIN\r\n"
    local log = same_at_every_split({ GREETING, EHLO_TLS, injected, "250-mx.example\r\n250 SIZE 5\r\n" },
      function(c)
        hello(c)
        assert(c.eng:starttls())
        c:run()
        assert(c.eng:tls_done())
        c:note("capabilities: " .. tostring(c.eng:capabilities()))
        c:note("after tls_done: " .. c.eng:next())
        hello(c)
        c:note("SIZE: " .. c.eng:capabilities().SIZE)
      end, { keep_split = function(i, at) return i ~= 3 or at < 14 end, bytewise = false })
    assert.same({
      'reply greeting 220 "mx.example ESMTP ready"',
      "> EHLO client.example\r\n",
      'reply ehlo 250 "mx.example\\nSTARTTLS\\nPIPELINING"',
      'done ehlo 250 "mx.example\\nSTARTTLS\\nPIPELINING"',
      "> STARTTLS\r\n",
      'reply starttls 220 "go ahead"',
      'starttls starttls 220 "go ahead"',
      "capabilities: nil",
      "after tls_done: idle",
      "> EHLO client.example\r\n",
      'reply ehlo 250 "mx.example\\nSIZE 5"',
      'done ehlo 250 "mx.example\\nSIZE 5"',
      "SIZE: 5",
    }, log)
  end)

  it("fails with tls when STARTTLS is refused", function()
    local log = same_at_every_split({ GREETING, EHLO_TLS, "454 4.7.0 TLS not available\r\n" },
      function(c)
        hello(c)
        assert(c.eng:starttls())
        c:run()
      end)
    assert.same('failed starttls 454 4.7.0 "4.7.0 TLS not available" fail=tls', log[#log])
  end)
end)

describe("engine NOOP, RSET and QUIT", function()
  local function one_command(start, reply)
    return same_at_every_split({ GREETING, EHLO_PIPELINING, reply }, function(c)
      hello(c)
      assert(start(c.eng))
      c:run()
      c:note("dead: " .. tostring(c.eng:dead()))
    end)
  end

  it("runs NOOP", function()
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> NOOP\r\n", 'reply noop 250 2.0.0 "2.0.0 ok"', 'done noop 250 2.0.0 "2.0.0 ok"', "dead: false",
    }), one_command(function(eng) return eng:noop() end, OK))
  end)

  it("fails with command when NOOP is refused", function()
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> NOOP\r\n", 'reply noop 502 "no"', 'failed noop 502 "no" fail=command', "dead: false",
    }), one_command(function(eng) return eng:noop() end, "502 no\r\n"))
  end)

  it("runs RSET", function()
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> RSET\r\n", 'reply rset 250 "flushed"', 'done rset 250 "flushed"', "dead: false",
    }), one_command(function(eng) return eng:rset() end, "250 flushed\r\n"))
  end)

  it("runs QUIT and is dead after it", function()
    assert.same(concat(HELLO_PIPELINING_LOG, {
      "> QUIT\r\n", 'reply quit 221 2.0.0 "2.0.0 bye"', 'done quit 221 2.0.0 "2.0.0 bye"', "dead: true",
    }), one_command(function(eng) return eng:quit() end, "221 2.0.0 bye\r\n"))
  end)

  it("refuses a new operation once dead", function()
    local c = new_conversation({ GREETING, EHLO_PIPELINING, "221 bye\r\n" })
    hello(c)
    assert(c.eng:quit())
    c:run()
    assert.has_error(function() c.eng:noop() end)
    assert.equal(0, c.eng:pending())
  end)
end)

describe("engine body framing", function()
  -- Runs a pipelined transaction up to need_body, writes chunks, ends the
  -- data and returns exactly the bytes written after the 354.
  local function framed_body(chunks)
    local c = new_conversation({ GREETING, EHLO_PIPELINING, OK .. "250 ok\r\n354 go\r\n" })
    hello(c)
    assert(c.eng:mail("sender@example.org"))
    assert(c.eng:rcpt("a@example.org"))
    assert(c.eng:data())
    assert.equal("need_body", c:run())
    for _, chunk in ipairs(chunks) do assert(c.eng:body(chunk)) end
    assert(c.eng:body_end())
    return c.eng:output()
  end

  it("normalises line ends to CRLF and stuffs leading dots", function()
    assert.equal("Subject: x\r\n\r\n..hidden\r\nbare\r\nlf\r\n\r\n..\r\n...\r\nend\r\n.\r\n",
      framed_body({ "Subject: x\n\n.hidden\rbare\nlf\r\n\r.\n..\r\nend" }))
  end)

  it("frames the same whatever the chunks", function()
    local body = "a\r\n.\r\nb\r\r\n.\n"
    local one_shot = framed_body({ body })
    assert.equal("a\r\n..\r\nb\r\n\r\n..\r\n.\r\n", one_shot)
    for at = 0, #body do
      assert.equal(one_shot, framed_body({ body:sub(1, at), body:sub(at + 1) }), "split at " .. at)
    end
  end)

  it("ends an empty body with a lone dot", function()
    assert.equal(".\r\n", framed_body({}))
    assert.equal(".\r\n", framed_body({ "" }))
  end)

  it("refuses a line over 998 octets and writes nothing for that chunk", function()
    local c = new_conversation({ GREETING, EHLO_PIPELINING, OK .. "250 ok\r\n354 go\r\n" })
    hello(c)
    assert(c.eng:mail("sender@example.org"))
    assert(c.eng:rcpt("a@example.org"))
    assert(c.eng:data())
    assert.equal("need_body", c:run())
    assert(c.eng:body("first\r\n"))
    local before = c.eng:output()
    local ok, code, message = c.eng:body(("x"):rep(999))
    assert.same({ nil, "line", "message line 2 is longer than 998 octets" }, { ok, code, message })
    assert.equal(before, c.eng:output())
  end)
end)

describe("engine states", function()
  it("records each transition when tracing, none when not", function()
    local c = new_conversation({ GREETING, EHLO_PIPELINING, OK .. "250 ok\r\n354 go\r\n", OK })
    assert.is_nil(c.eng:trace())
    c.eng:set_trace(true)
    hello(c)
    assert(c.eng:mail("sender@example.org"))
    assert(c.eng:rcpt("a@example.org"))
    assert(c.eng:data())
    assert.equal("need_body", c:run())
    assert(c.eng:body("hi\r\n"))
    assert(c.eng:body_end())
    c:run()
    assert.equal(table.concat({
      "connected/idle -> connected/hello",
      "connected/hello -> greeted/hello",
      "greeted/hello -> ready/hello",
      "ready/hello -> ready/idle",
      "ready/idle -> ready/transaction",
      "ready/transaction -> ready/body",
      "ready/body -> ready/transaction",
      "ready/transaction -> ready/idle",
      "",
    }, "\n"), c.eng:trace())
    assert.is_nil(c.eng:trace(), "trace() forgets what it returned")
  end)

  it("scripts/engine-states.lua prints every state and operation of the header", function()
    local h = assert(io.open("csrc/smtp_engine.h", "rb")):read("*a")
    local p = assert(io.popen("lua5.4 scripts/engine-states.lua csrc/smtp_engine.c 2>&1"))
    local table_text = p:read("*a")
    p:close()
    local names = {}
    for name in h:gmatch("SMTP_STATE_([A-Z_]+)") do names[#names + 1] = name end
    for name in h:gmatch("SMTP_OP_([A-Z_]+)") do names[#names + 1] = name end
    assert.is_true(#names > 10)
    for _, name in ipairs(names) do
      if name ~= "COUNT" then
        local shown = name == "NONE" and "idle" or name:lower()
        assert.truthy(table_text:find("| " .. shown .. " |", 1, true), shown .. " missing")
      end
    end
  end)
end)

describe("engine limits", function()
  it("refuses max_commands beyond an int's reach instead of truncating it", function()
    assert.has_error(function() core.engine{ max_commands = 1e12 } end,
      "smtp.core: limit 'max_commands' out of range")
    assert.has_error(function() core.engine{ max_line = 0 / 0 } end,
      "smtp.core: limit 'max_line' out of range")
    assert.is_userdata(core.engine{ max_commands = 1000 })
  end)
end)
