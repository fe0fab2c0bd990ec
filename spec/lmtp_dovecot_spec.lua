-- LMTP against a real Dovecot (spec/support/dovecot_lmtp.lua: a private
-- dovecot-lmtpd on 127.0.0.1 and on a Unix socket, virtual users with
-- Maildirs, and one user whose quota is 1 byte, so that Dovecot refuses
-- that recipient after the end of data while the others are delivered).
-- Each case runs over TCP with CHUNKING (the default: Dovecot offers it),
-- over TCP with chunking = false (DATA), and over the Unix socket.
-- Every call has timeout = 5 and must come back within CALL_LIMIT seconds.
-- Tags: #dovecot #lmtp (pending without dovecot-lmtpd or when not root).
local smtp = require "smtp"
local socket = require "socket"
local lmtp = require "spec.support.dovecot_lmtp"

local FROM = "sender@example.org"
local GOOD1, GOOD2, FULL = "good1@example.test", "good2@example.test", "full@example.test"
local HELO = "client.test"
-- Seconds: a call that takes longer counts as a hang. Generous (the
-- deadline is 20 s, every wait 5 s) so that a loaded 2-CPU machine does not
-- make a slow call look like a hang; no speed target (those are bench/'s).
local CALL_LIMIT = 15

local MODES = {
  { name = "TCP, CHUNKING (default)", unix = false, verb = "BDAT" },
  { name = "TCP, chunking = false (DATA)", unix = false, chunking = false, verb = "DATA" },
  { name = "Unix socket (default: CHUNKING)", unix = true, verb = "BDAT" },
}

-- A message as Dovecot should store it (mail_save_crlf = yes): CRLF line
-- ends, a line with a leading dot, an empty line in the body.
local function message(tag)
  return table.concat({
    "From: Sender <" .. FROM .. ">",
    "To: <" .. GOOD1 .. ">, <" .. GOOD2 .. ">",
    "Subject: lmtp " .. tag,
    "Message-ID: <" .. tag .. "@lua-smtp.test>",
    "",
    "first line of " .. tag,
    ".a line with a leading dot",
    "..two dots",
    "",
    "last line of " .. tag,
    "",
  }, "\r\n")
end

local function why(err, info)
  if not info then return tostring(err) end
  return string.format("%s (kind=%s stage=%s code=%s temporary=%s)", tostring(err), tostring(info.kind),
    tostring(info.stage), tostring(info.code), tostring(info.temporary))
end

-- Connection options for a mode, with a transcript of the commands sent.
local function options(dv, mode, sent, extra)
  local o = { protocol = "lmtp", tls = "none", helo = HELO, timeout = 5, deadline = 20 }
  if mode.unix then o.path = dv.path else o.host, o.port = "127.0.0.1", dv.port end
  if mode.chunking ~= nil then o.chunking = mode.chunking end
  o.debug = function(kind, text)
    if kind == "send" and (text:find("^'BDAT ") or text:find("^'DATA")) then sent[#sent + 1] = text end
  end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- What the transcript says about the verb used: "BDAT", "DATA", or both.
local function verbs(sent)
  local bdat, data = false, false
  for _, l in ipairs(sent) do
    if l:find("^'BDAT ") then bdat = true end
    if l:find("^'DATA") then data = true end
  end
  if bdat and data then return "both" end
  return bdat and "BDAT" or data and "DATA" or "none"
end

-- How many messages each user's Maildir holds, for failure messages: shows
-- what Dovecot delivered whatever the client concluded.
local function maildirs(dv)
  return string.format("[Maildirs: %s=%d %s=%d %s=%d]", GOOD1, dv:count(GOOD1), FULL, dv:count(FULL),
    GOOD2, dv:count(GOOD2))
end

-- Runs fn() and fails the test when it took longer than CALL_LIMIT.
local function timed(what, fn)
  local t0 = socket.gettime()
  local a, b, c = fn()
  local elapsed = socket.gettime() - t0
  assert.is_true(elapsed < CALL_LIMIT, string.format("%s took %.1f s (limit %d s): %s", what, elapsed,
    CALL_LIMIT, why(b, c)))
  return a, b, c
end

-- What Dovecot itself answers after the end of data for a recipient:
-- asked over a plain socket with LHLO, MAIL, RCPT, DATA (no library).
local function dovecot_reply_for(dv, rcpt)
  local c = socket.tcp()
  c:settimeout(5)
  assert(c:connect("127.0.0.1", dv.port))
  local function reply()
    local lines = {}
    repeat
      local l = assert(c:receive("*l"))
      lines[#lines + 1] = l
    until not l:match("^%d%d%d%-")
    return lines[#lines]
  end
  local function cmd(s) assert(c:send(s .. "\r\n")) return reply() end
  reply()
  cmd("LHLO probe.test")
  cmd("MAIL FROM:<" .. FROM .. ">")
  assert.matches("^250", cmd("RCPT TO:<" .. rcpt .. ">"))
  assert.matches("^354", cmd("DATA"))
  local final = cmd("Subject: probe\r\n\r\nprobe\r\n.")
  cmd("QUIT")
  c:close()
  local code, enhanced = final:match("^(%d%d%d) (%d%.%d+%.%d+)")
  return tonumber(code), enhanced, final
end

describe("LMTP against a real Dovecot #dovecot #lmtp", function()
  local dv, skip

  setup(function()
    if not lmtp.available() then
      skip = "dovecot-core / dovecot-lmtpd missing, or not root"
      return
    end
    dv = lmtp.start{ users = { GOOD1, GOOD2 }, full = { FULL } }
  end)

  teardown(function()
    if dv then dv:stop() end
    dv = nil
    lmtp.stop_all()
  end)

  before_each(function()
    if dv then dv:clear() end
  end)

  it("Dovecot offers LHLO with CHUNKING and PIPELINING, and refuses the full user after the data", function()
    if skip then pending(skip) return end
    local s = assert(smtp.connect{ host = "127.0.0.1", port = dv.port, protocol = "lmtp", tls = "none",
                                   helo = HELO, timeout = 5 })
    assert.truthy(s.capabilities.CHUNKING)
    assert.truthy(s.capabilities.PIPELINING)
    s:quit()
    local code, enhanced = dovecot_reply_for(dv, FULL)
    assert.equal(552, code)
    assert.equal("5.2.2", enhanced)
    assert.equal(0, dv:count(FULL))
  end)

  for _, mode in ipairs(MODES) do
    describe(mode.name, function()
      -- the brief's case is the middle; first and last give the other orders
      -- of Dovecot's per-recipient replies (a failure first, a failure last)
      for _, order in ipairs({
        { "in the middle", { GOOD1, FULL, GOOD2 } },
        { "first", { FULL, GOOD1, GOOD2 } },
        { "last", { GOOD1, GOOD2, FULL } },
      }) do
        it("three recipients, the quota-full one " .. order[1] .. ": two delivered byte for byte", function()
          if skip then pending(skip) return end
          local raw, sent = message("three"), {}
          local res, err, info = timed("smtp.send", function()
            return smtp.send(options(dv, mode, sent, {
              envelope = { from = FROM, to = order[2] }, message = raw }))
          end)
          assert.is_table(res, why(err, info) .. " " .. maildirs(dv))
          assert.equal(mode.verb, verbs(sent))
          assert.same({ GOOD1, GOOD2 }, res.accepted)
          local r = res.refused and res.refused[FULL]
          assert.is_table(r, "no refused[" .. FULL .. "]")
          assert.is_number(r.code)
          assert.is_true(r.code >= 400 and r.code < 600, "code " .. tostring(r.code))
          assert.is_string(r.message)
          assert.truthy(r.message:find("Quota exceeded", 1, true), r.message)
          assert.is_table(res.replies)
          for _, u in ipairs({ GOOD1, FULL, GOOD2 }) do
            assert.is_table(res.replies[u], "no replies[" .. u .. "]")
          end
          assert.equal(250, res.replies[GOOD1].code)
          assert.equal(250, res.replies[GOOD2].code)
          assert.equal(r.code, res.replies[FULL].code)
          for _, u in ipairs({ GOOD1, GOOD2 }) do
            local got = dv:messages(u)
            assert.equal(1, #got, u)
            assert.equal(raw, got[1].content)
          end
          assert.equal(0, dv:count(FULL))
        end)
      end

      it("only the quota-full recipient: kind data with Dovecot's code, not temporary (552)", function()
        if skip then pending(skip) return end
        local sent = {}
        local res, err, info = timed("smtp.send", function()
          return smtp.send(options(dv, mode, sent, {
            envelope = { from = FROM, to = { FULL } }, message = message("full") }))
        end)
        assert.is_nil(res, "a result instead of a failure")
        assert.is_table(info, tostring(err))
        assert.equal("data", info.kind, why(err, info))
        assert.equal(mode.verb, verbs(sent))
        assert.equal(552, info.code, why(err, info))
        assert.equal("5.2.2", info.enhanced)
        assert.is_false(info.temporary)
        assert.equal(0, dv:count(FULL))
      end)

      it("send_many: 3 messages to both good users, each delivered once, in order", function()
        if skip then pending(skip) return end
        local sent = {}
        local s, cerr, cinfo = smtp.connect(options(dv, mode, sent))
        assert.is_table(s, why(cerr, cinfo))
        local list = {}
        for i = 1, 3 do
          list[i] = { envelope = { from = FROM, to = { GOOD1, GOOD2 } }, message = message("many" .. i) }
        end
        local results = timed("s:send_many", function() return s:send_many(list, { window = 3 }) end)
        s:quit()
        assert.equal(3, #results)
        for i = 1, 3 do
          assert.is_nil(results[i].error, results[i].error and string.format("message %d: %s %s", i,
            why(results[i].error, results[i].info), maildirs(dv)))
          assert.same({ GOOD1, GOOD2 }, results[i].accepted)
        end
        assert.equal(mode.verb, verbs(sent))
        for _, u in ipairs({ GOOD1, GOOD2 }) do
          local got = dv:messages(u)
          assert.equal(3, #got, u)
          for i = 1, 3 do assert.equal(message("many" .. i), got[i].content) end
        end
      end)

      it("send_many: the quota-full user in the middle message only; the others unaffected", function()
        if skip then pending(skip) return end
        local sent = {}
        local s, cerr, cinfo = smtp.connect(options(dv, mode, sent))
        assert.is_table(s, why(cerr, cinfo))
        local list = {}
        for i = 1, 3 do
          local to = { GOOD1, GOOD2 }
          if i == 2 then to = { GOOD1, FULL, GOOD2 } end
          list[i] = { envelope = { from = FROM, to = to }, message = message("mixed" .. i) }
        end
        local results = timed("s:send_many", function() return s:send_many(list, { window = 3 }) end)
        s:quit()
        assert.equal(3, #results)
        for i = 1, 3 do
          assert.is_nil(results[i].error, results[i].error and string.format("message %d: %s %s", i,
            why(results[i].error, results[i].info), maildirs(dv)))
          assert.same({ GOOD1, GOOD2 }, results[i].accepted)
        end
        assert.equal(552, results[2].refused[FULL].code)
        for _, u in ipairs({ GOOD1, GOOD2 }) do
          local got = dv:messages(u)
          assert.equal(3, #got, u)
          for i = 1, 3 do assert.equal(message("mixed" .. i), got[i].content) end
        end
        assert.equal(0, dv:count(FULL))
      end)
    end)
  end
end)

describe("LMTP against a real Dovecot with quota_full_tempfail #dovecot #lmtp", function()
  local dv, skip

  setup(function()
    if not lmtp.available() then
      skip = "dovecot-core / dovecot-lmtpd missing, or not root"
      return
    end
    dv = lmtp.start{ users = { GOOD1 }, full = { FULL }, quota_tempfail = true }
  end)

  teardown(function()
    if dv then dv:stop() end
    dv = nil
    lmtp.stop_all()
  end)

  before_each(function()
    if dv then dv:clear() end
  end)

  it("Dovecot answers 452 for the full user", function()
    if skip then pending(skip) return end
    local code, enhanced = dovecot_reply_for(dv, FULL)
    assert.equal(452, code)
    assert.equal("4.2.2", enhanced)
  end)

  for _, mode in ipairs(MODES) do
    it(mode.name .. ": only the quota-full recipient: kind data, 452, temporary", function()
      if skip then pending(skip) return end
      local sent = {}
      local res, err, info = timed("smtp.send", function()
        return smtp.send(options(dv, mode, sent, {
          envelope = { from = FROM, to = { FULL } }, message = message("tempfail") }))
      end)
      assert.is_nil(res, "a result instead of a failure")
      assert.is_table(info, tostring(err))
      assert.equal("data", info.kind, why(err, info))
      assert.equal(452, info.code, why(err, info))
      assert.equal("4.2.2", info.enhanced)
      assert.is_true(info.temporary)
    end)

    it(mode.name .. ": a good and the full recipient: refused[full] is 452", function()
      if skip then pending(skip) return end
      local sent, raw = {}, message("tempfail-mixed")
      local res, err, info = timed("smtp.send", function()
        return smtp.send(options(dv, mode, sent, {
          envelope = { from = FROM, to = { FULL, GOOD1 } }, message = raw }))
      end)
      assert.is_table(res, why(err, info) .. " " .. maildirs(dv))
      assert.same({ GOOD1 }, res.accepted)
      assert.equal(452, res.refused[FULL].code)
      local got = dv:messages(GOOD1)
      assert.equal(raw, got[#got].content)
    end)
  end
end)
