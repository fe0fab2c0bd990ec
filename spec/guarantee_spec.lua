-- The delivery guarantees, point by point (numbered as in the issue that
-- states them), against the scriptable fake server on 127.0.0.1
-- (spec/support/fake_server.lua). Every case checks what the public API
-- returned and the bytes the client actually sent (the server's record).
--
-- Where a point applies to several paths it is run on each of them:
--   DATA                     the server offers PIPELINING, no CHUNKING
--   BDAT with PIPELINING     the server offers PIPELINING and CHUNKING
--   BDAT without PIPELINING  the server offers CHUNKING only
-- Most servers here answer each command as it comes ({ serve = rules }), so
-- they work whether or not the client pipelines; cases about what arrives
-- together use { batch = rules } (all replies in one write), { silence = s }
-- (the client must wait for a reply) and linear steps.
local smtp = require "smtp"
local core = require "smtp.core"
local servers = require "spec.support.servers"

local FROM = "sender@example.org"
local TO, TO2, TO3 = "rcpt@example.net", "other@example.net", "third@example.net"
local UTF8_TO = "j\195\182rg@example.net"     -- jörg@example.net
local TIMEOUT = 3                             -- client: seconds for each wait
local SERVER_TIMEOUT = 10                     -- fake server: seconds in all

-- ---- the wire ------------------------------------------------------------------

local literal, say, hear, ehlo_reply, steps =
  servers.literal, servers.say, servers.hear, servers.ehlo_reply, servers.steps
-- A command line starting with prefix (parameters may follow).
local function hear_start(prefix) return { expect = "^" .. literal(prefix) } end


-- Greeting and the EHLO (or LHLO) exchange offering caps.
local function opening(caps, verb)
  return { say("220 fake.test ESMTP\r\n"), hear((verb or "EHLO") .. " client.test"), ehlo_reply(caps) }
end

-- Serve rules: the given ones first, then a server that accepts everything.
local function rules(first)
  local out = {}
  for _, r in ipairs(first or {}) do out[#out + 1] = r end
  local defaults = {
    { "^MAIL FROM:", "250 2.1.0 ok\r\n" },
    { "^RCPT TO:", "250 2.1.5 ok\r\n" },
    { "^DATA$", "354 go ahead\r\n", data = "250 2.0.0 queued\r\n" },
    { "^BDAT ", "250 2.0.0 chunk ok\r\n", last = "250 2.0.0 queued\r\n" },
    { "^RSET$", "250 2.0.0 reset\r\n" },
    { "^NOOP$", "250 2.0.0 ok\r\n" },
    { "^QUIT$", "221 2.0.0 bye\r\n", close = true },
  }
  for _, r in ipairs(defaults) do out[#out + 1] = r end
  return out
end

local function serving(caps, first, verb)
  return steps(opening(caps, verb), { serve = rules(first) })
end

local DATA_PATH = { name = "DATA", caps = { "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES" } }
local BDAT_PIPE = { name = "BDAT with PIPELINING", bdat = true,
                    caps = { "PIPELINING", "CHUNKING", "8BITMIME", "ENHANCEDSTATUSCODES" } }
local BDAT_ALONE = { name = "BDAT without PIPELINING", bdat = true,
                     caps = { "CHUNKING", "8BITMIME", "ENHANCEDSTATUSCODES" } }
local PATHS = { DATA_PATH, BDAT_PIPE, BDAT_ALONE }
local BDAT_PATHS = { BDAT_PIPE, BDAT_ALONE }

-- ---- the server's record -----------------------------------------------------------

local VERBS = { EHLO = true, HELO = true, LHLO = true, MAIL = true, RCPT = true, DATA = true,
                BDAT = true, RSET = true, NOOP = true, QUIT = true, AUTH = true, STARTTLS = true }

-- Splits what the client sent into items:
--   { kind = "cmd", line = "MAIL FROM:<...>" }
--   { kind = "bdat", line = "BDAT 12 LAST", size = 12, last = true, payload = "..." }
--   { kind = "data", text = "...", ended = bool }   the lines after DATA (as sent,
--                                                    dot-stuffed), without the "." line
-- After DATA, what follows is taken as data unless the next line is a command.
local function parse(rec)
  local items, i, n = {}, 1, #rec
  local function next_line()
    local e = rec:find("\n", i, true) or n
    local raw = rec:sub(i, e)
    i = e + 1
    return raw, (raw:gsub("\r?\n$", ""))
  end
  while i <= n do
    local _, line = next_line()
    local size = line:match("^BDAT (%d+)")
    if size then
      size = tonumber(size)
      items[#items + 1] = { kind = "bdat", line = line, size = size, last = line:find(" LAST$") ~= nil,
                            payload = rec:sub(i, i + size - 1) }
      i = i + size
    else
      items[#items + 1] = { kind = "cmd", line = line }
      if line == "DATA" and i <= n then
        local peek = rec:match("^[^\r\n]*", i)
        local verb = peek:match("^(%u+)$") or peek:match("^(%u+) ")
        if peek == "." or not VERBS[verb or ""] then
          local d, parts = { kind = "data", ended = false }, {}
          while i <= n do
            local raw, l = next_line()
            if l == "." then
              d.ended = true
              break
            end
            parts[#parts + 1] = raw
          end
          d.text = table.concat(parts)
          items[#items + 1] = d
        end
      end
    end
  end
  return items
end

-- "EHLO MAIL RCPT BDAT-LAST QUIT": the shape of a record, for messages.
local function words(items)
  local out = {}
  for _, it in ipairs(items) do
    if it.kind == "cmd" then
      out[#out + 1] = it.line:match("^(%S*)")
    elseif it.kind == "bdat" then
      out[#out + 1] = it.last and "BDAT-LAST" or "BDAT"
    else
      out[#out + 1] = it.ended and "<data>" or "<unended data>"
    end
  end
  return table.concat(out, " ")
end

-- Command lines (BDAT included, data left out), in order.
local function command_lines(items)
  local out = {}
  for _, it in ipairs(items) do
    if it.kind ~= "data" then out[#out + 1] = it.line end
  end
  return out
end

local function count_commands(items, pattern)
  local k = 0
  for _, it in ipairs(items) do
    if it.kind == "cmd" and it.line:find(pattern) then k = k + 1 end
  end
  return k
end

local function first_command(items, pattern)
  for _, it in ipairs(items) do
    if it.kind == "cmd" and it.line:find(pattern) then return it.line end
  end
  return nil
end

-- How many ends of data were sent: "." after DATA, or BDAT ... LAST.
local function ends_of_data(items)
  local k = 0
  for _, it in ipairs(items) do
    if (it.kind == "data" and it.ended) or (it.kind == "bdat" and it.last) then k = k + 1 end
  end
  return k
end

local function bdat_items(items)
  local out = {}
  for _, it in ipairs(items) do
    if it.kind == "bdat" then out[#out + 1] = it end
  end
  return out
end

local function payload(items)
  local out = {}
  for _, it in ipairs(bdat_items(items)) do out[#out + 1] = it.payload end
  return table.concat(out)
end

local function data_texts(items)
  local out = {}
  for _, it in ipairs(items) do
    if it.kind == "data" then out[#out + 1] = it.text end
  end
  return out
end

-- ---- message sources ---------------------------------------------------------------

-- A function source yielding the strings of list, then nil.
local function chunks(list)
  local i = 0
  return function()
    i = i + 1
    return list[i]
  end
end

-- A function source yielding the strings of list, then failing with err.
local function failing(list, err)
  local i = 0
  return function()
    i = i + 1
    if list[i] then return list[i] end
    return nil, err
  end
end

-- ---- running a case ----------------------------------------------------------------

local function conn_opts(port, extra)
  local o = { host = "127.0.0.1", port = port, tls = "none", helo = "client.test", timeout = TIMEOUT }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- smtp.send with these options (host, port etc. added).
local function send(extra)
  return function(port) return smtp.send(conn_opts(port, extra)) end
end

-- smtp.connect, then s:sendmail(from, rcpts, raw).
local function sendmail(from, rcpts, raw, copts)
  return function(port)
    local s, err, info = smtp.connect(conn_opts(port, copts))
    if not s then return nil, err, info end
    local res, e, i = s:sendmail(from, rcpts, raw)
    s:quit()
    return res, e, i
  end
end

-- smtp.connect, then s:send_many(list, mopts); returns the list of entries.
local function send_many(list, mopts, copts)
  return function(port)
    local s, err, info = smtp.connect(conn_opts(port, copts))
    if not s then return nil, err, info end
    local results = s:send_many(list, mopts)
    s:quit()
    return results
  end
end

-- Runs call(port) against a fake server following script; returns
-- { res, err, info, elapsed, sent, log, items }.
local function run(script, call, server_timeout)
  local srv = servers.fake{ steps = script, timeout = server_timeout or SERVER_TIMEOUT }
  local t0 = core.now()
  local res, err, info = call(srv.port)
  local elapsed = core.now() - t0
  srv:wait(4)
  local r = { res = res, err = err, info = info, elapsed = elapsed, sent = srv:received(),
              log = srv:errors() }
  r.items = parse(r.sent)
  srv:stop()
  return r
end

-- One line describing a run, for assertion messages.
local function ctx(r)
  local log = (r.log or ""):gsub("\n+$", ""):gsub("\n", " / ")
  local wire = words(r.items)
  if #wire > 160 then wire = wire:sub(1, 160) .. " ... (" .. #r.items .. " items)" end
  return string.format("[err: %s | stage: %s | wire: %s | server: %s]", tostring(r.err),
    tostring(r.info and r.info.stage), wire, log:sub(1, 300))
end

-- send_many entry i of run r, as a run of its own.
local function entry(r, i)
  assert.is_table(r.res, "send_many returned no list " .. ctx(r))
  local e = r.res[i]
  assert.is_table(e, "no entry " .. i .. " " .. ctx(r))
  local out = { sent = r.sent, log = r.log, items = r.items, elapsed = r.elapsed }
  if e.error ~= nil then
    out.err, out.info = e.error, e.info
  else
    out.res = e
  end
  return out
end

-- The server got nothing it did not expect, and never saw the client go ahead
-- of a reply it had to wait for.
local function clean(r)
  assert.is_nil(r.log:find("MISMATCH", 1, true), "the server did not expect what the client sent " .. ctx(r))
  assert.is_nil(r.log:find("AHEAD", 1, true), "the client sent before the reply it had to wait for " .. ctx(r))
end

local function succeeded(r)
  assert.is_nil(r.err, "expected a success " .. ctx(r))
  assert.is_table(r.res, "expected a result table " .. ctx(r))
  return r.res
end

local STAGES = { "connect", "greeting", "hello", "starttls", "tls", "auth", "pending", "mail", "rcpt",
                 "data", "data_end" }
local RANK = {}
for i, s in ipairs(STAGES) do RANK[s] = i end

local function before_data_end(r)
  local stage = r.info and r.info.stage
  assert.is_truthy(RANK[stage], "unknown stage " .. tostring(stage) .. " " .. ctx(r))
  assert.is_true(RANK[stage] < RANK.data_end, "stage must be before data_end " .. ctx(r))
end

-- A failure of this kind; fields are compared with info (temporary as a
-- boolean: false must be false, not nil).
local function failed(r, kind, fields)
  assert.is_nil(r.res, "expected a failure, got a result " .. ctx(r))
  assert.is_string(r.err, "expected an error text " .. ctx(r))
  assert.is_table(r.info, "expected an info table " .. ctx(r))
  assert.equal(kind, r.info.kind, "kind " .. ctx(r))
  assert.equal(kind .. ": ", r.err:sub(1, #kind + 2), "error text prefix " .. ctx(r))
  for k, v in pairs(fields or {}) do
    assert.equal(v, r.info[k], "info." .. k .. " " .. ctx(r))
  end
  -- data_end is only ever said of a message whose end of data went out.
  if r.info.stage == "data_end" and r.items then
    assert.is_true(ends_of_data(r.items) > 0, "stage data_end, but no end of data was sent " .. ctx(r))
  end
end

local function no_bdat(r)
  assert.is_nil(r.sent:find("BDAT", 1, true), "a BDAT command was sent " .. ctx(r))
end

local function not_ended(r)
  assert.equal(0, ends_of_data(r.items), "the data was ended (\".\" or BDAT ... LAST) " .. ctx(r))
end

local function single_line(r)
  assert.is_nil(r.err:find("[\r\n]"), "the error text spans lines: " .. string.format("%q", r.err))
end

-- ---- transcripts ------------------------------------------------------------------------

local unescape = { r = "\r", n = "\n", t = "\t", ["\\"] = "\\", ["'"] = "'" }

-- The bytes a transcript's 'repr' stands for (\r \n \t \\ \' \xNN).
local function unrepr(s)
  local out, i = {}, 1
  while i <= #s do
    local c = s:sub(i, i)
    if c ~= "\\" then
      out[#out + 1] = c
      i = i + 1
    elseif s:sub(i + 1, i + 1) == "x" then
      out[#out + 1] = string.char(tonumber(s:sub(i + 2, i + 3), 16) or 63)
      i = i + 4
    else
      local e = s:sub(i + 1, i + 1)
      out[#out + 1] = unescape[e] or e
      i = i + 2
    end
  end
  return table.concat(out)
end

-- A debug hook and the list it fills with { kind, text }.
local function tracer()
  local lines = {}
  return function(kind, text) lines[#lines + 1] = { kind = kind, text = text } end, lines
end

-- The command lines a transcript shows as sent ('...', not b'...' data).
local function traced_commands(lines)
  local out = {}
  for _, l in ipairs(lines) do
    local quoted = l.kind == "send" and l.text:match("^'(.*)'$")
    if quoted then
      for cmd in (unrepr(quoted)):gmatch("([^\r\n]*)\r?\n") do
        if cmd ~= "." then out[#out + 1] = cmd end
      end
    end
  end
  return out
end

-- =======================================================================================

describe("delivery guarantees #socket", function()
  after_each(function() servers.stop_all() end)

  local CANARY = "canary-body-line"
  local RAW = "Subject: guarantee\r\n\r\n" .. CANARY .. "\r\n"

  -- ---------------------------------------------------------------------------------
  describe("1. no body before the transaction exists", function()
    for _, path in ipairs(PATHS) do
      it(path.name .. ": MAIL 550 with RCPT 250 -> sender at mail, nothing of the message sent", function()
        local r = run(serving(path.caps, {
          { "^MAIL ", "550 5.7.1 sender rejected\r\n" },
          { "^DATA$", "354 go ahead\r\n", data = "554 5.5.1 no valid transaction\r\n" },
        }), send{ envelope = { from = FROM, to = { TO } }, message = RAW })
        failed(r, "sender", { stage = "mail", temporary = false, code = 550 })
        no_bdat(r)
        assert.is_nil(r.sent:find(CANARY, 1, true), "the body was sent " .. ctx(r))
        assert.equal("EHLO MAIL", words(r.items):sub(1, 9), ctx(r))
        clean(r)
      end)

      it(path.name .. ": garbled MAIL reply \"2x0 ok\" -> protocol at mail, nothing of the message sent",
        function()
          local r = run(serving(path.caps, { { "^MAIL ", "2x0 ok\r\n" } }),
            send{ envelope = { from = FROM, to = { TO } }, message = RAW })
          failed(r, "protocol", { stage = "mail" })
          no_bdat(r)
          assert.is_nil(r.sent:find(CANARY, 1, true), "the body was sent " .. ctx(r))
          clean(r)
        end)

      it(path.name .. ": every RCPT refused -> recipients at rcpt, nothing of the message sent", function()
        local r = run(serving(path.caps, {
          { "^RCPT ", "550 5.1.1 no such user\r\n" },
          { "^DATA$", "354 go ahead\r\n", data = "554 5.5.1 no valid recipients\r\n" },
        }), send{ envelope = { from = FROM, to = { TO, TO2 } }, message = RAW })
        failed(r, "recipients", { stage = "rcpt", temporary = false })
        assert.equal(550, r.info.refused[TO] and r.info.refused[TO].code, ctx(r))
        assert.equal(550, r.info.refused[TO2] and r.info.refused[TO2].code, ctx(r))
        no_bdat(r)
        assert.is_nil(r.sent:find(CANARY, 1, true), "the body was sent " .. ctx(r))
        clean(r)
      end)
    end

    for _, path in ipairs(BDAT_PATHS) do
      it(path.name .. ": the first BDAT leaves only after the RCPT replies are in", function()
        -- Nothing may arrive while the server holds back the RCPT reply.
        local r = run(serving(path.caps, { { "^RCPT ", "250 2.1.5 ok\r\n", silence = 0.4 } }),
          send{ envelope = { from = FROM, to = { TO } }, message = RAW })
        succeeded(r)
        clean(r)
        assert.equal(RAW, payload(r.items), ctx(r))
      end)
    end

    local function three()
      local list = {}
      for i = 1, 3 do
        list[i] = { envelope = { from = FROM, to = { TO } }, message = "Subject: m" .. i .. "\r\n\r\nbody\r\n" }
      end
      return list
    end

    -- Entries whose BDAT LAST is in the record went out: they are data_end.
    local function blind_truth(r)
      local sent_last = 0
      for _, it in ipairs(bdat_items(r.items)) do
        if it.last then sent_last = sent_last + 1 end
      end
      for i = 2, math.min(sent_last, 3) do
        assert.equal("data_end", entry(r, i).info and entry(r, i).info.stage, "message " .. i .. " " .. ctx(r))
      end
    end

    it("window = 3: BDAT LAST sent, the connection dropped before the MAIL reply -> data_end", function()
      local r = run(steps(opening(BDAT_PIPE.caps), hear_start("MAIL FROM:<" .. FROM .. ">"),
        hear_start("RCPT TO:<" .. TO .. ">"), { read = "bdat" }, { drain = 0.3 }, { close = true }),
        send_many(three(), { window = 3 }))
      local e1 = entry(r, 1)
      failed(e1, "closed", { stage = "data_end", temporary = true })
      blind_truth(r)
    end)

    it("window = 3: BDAT LAST sent, then a garbled MAIL reply -> protocol at data_end", function()
      local r = run(steps(opening(BDAT_PIPE.caps), hear_start("MAIL FROM:<" .. FROM .. ">"),
        hear_start("RCPT TO:<" .. TO .. ">"), { read = "bdat" }, { drain = 0.3 }, say("2x0 ok\r\n")),
        send_many(three(), { window = 3 }))
      local e1 = entry(r, 1)
      failed(e1, "protocol", { stage = "data_end" })
      blind_truth(r)
    end)
  end)

  -- ---------------------------------------------------------------------------------
  describe("2. truthful stage", function()
    it("send_many of 3 (BDAT with PIPELINING), dropped after the first MAIL/RCPT -> mail/rcpt, pending",
      function()
        local list = {}
        for i = 1, 3 do
          list[i] = { envelope = { from = FROM, to = { TO } }, message = "Subject: m" .. i .. "\r\n\r\nbody\r\n" }
        end
        local r = run(steps(opening(BDAT_PIPE.caps), hear_start("MAIL FROM:<" .. FROM .. ">"),
          hear_start("RCPT TO:<" .. TO .. ">"), { close = true }), send_many(list))
        local e1 = entry(r, 1)
        assert.is_nil(e1.res, "message 1 cannot have been sent " .. ctx(e1))
        assert.is_true(e1.info.stage == "mail" or e1.info.stage == "rcpt", "message 1 stage " .. ctx(e1))
        assert.equal(true, e1.info.temporary, "message 1 temporary " .. ctx(e1))
        for i = 2, 3 do
          local e = entry(r, i)
          assert.is_nil(e.res, "message " .. i .. " cannot have been sent " .. ctx(e))
          assert.equal("pending", e.info.stage, "message " .. i .. " stage " .. ctx(e))
          assert.equal(true, e.info.temporary, "message " .. i .. " temporary " .. ctx(e))
          assert.is_truthy(e.err:find("not sent", 1, true), "message " .. i .. " text " .. ctx(e))
        end
        assert.equal(1, count_commands(r.items, "^MAIL "), ctx(r))
        no_bdat(r)
      end)

    for _, path in ipairs(PATHS) do
      it(path.name .. ": send_many, message 2's source fails -> message 1 sent, message 2 argument",
        function()
          local list = {
            { envelope = { from = FROM, to = { TO } }, message = "Subject: one\r\n\r\nfirst\r\n" },
            { envelope = { from = FROM, to = { TO } }, message = failing({}, "boom") },
          }
          local r = run(serving(path.caps, {
            { "^DATA$", "354 go ahead\r\n", data = "250 2.0.0 Ok: queued as M1\r\n", times = 1 },
            { "^BDAT ", "250 2.0.0 chunk ok\r\n", last = "250 2.0.0 Ok: queued as M1\r\n", times = 1 },
          }), send_many(list))
          local e1, e2 = entry(r, 1), entry(r, 2)
          local res = succeeded(e1)
          assert.equal(250, res.code, ctx(e1))
          failed(e2, "argument", { temporary = false })
          before_data_end(e2)
          assert.equal(1, ends_of_data(r.items), "only message 1 may be ended " .. ctx(r))
          clean(r)
        end)
    end
  end)

  -- ---------------------------------------------------------------------------------
  describe("3. permanent is permanent", function()
    for _, path in ipairs(PATHS) do
      it(path.name .. ": a 1200-octet line in a function source -> argument, permanent, data not ended",
        function()
          local r = run(serving(path.caps), send{ envelope = { from = FROM, to = { TO } },
            message = chunks{ "Subject: x\r\n\r\n", string.rep("a", 1200) .. "\r\n" } })
          failed(r, "argument", { temporary = false })
          before_data_end(r)
          not_ended(r)
          clean(r)
        end)

      it(path.name .. ": a source failing with \"disk error\" (s:sendmail) -> argument, permanent, not ended",
        function()
          local r = run(serving(path.caps),
            sendmail(FROM, { TO }, failing({ "Subject: x\r\n\r\n", "part one\r\n" }, "disk error")))
          failed(r, "argument", { temporary = false })
          before_data_end(r)
          not_ended(r)
          clean(r)
        end)
    end

    for _, caps in ipairs({ { "PIPELINING", "ENHANCEDSTATUSCODES" },
                            { "PIPELINING", "CHUNKING", "ENHANCEDSTATUSCODES" } }) do
      local name = caps[2] == "CHUNKING" and "CHUNKING" or "no CHUNKING"
      it(name .. ": 8-bit raw message, no 8BITMIME -> unsupported, only EHLO and QUIT sent", function()
        local r = run(serving(caps), send{ envelope = { from = FROM, to = { TO } },
          message = "Subject: x\r\n\r\ncaf\195\169\r\n" })
        failed(r, "unsupported", { temporary = false })
        assert.equal("EHLO client.test\r\nQUIT\r\n", r.sent, ctx(r))
      end)
    end

    for _, caps in ipairs({ { "PIPELINING", "SIZE 100" }, { "PIPELINING", "CHUNKING", "SIZE 100" } }) do
      local name = caps[2] == "CHUNKING" and "CHUNKING" or "no CHUNKING"
      it(name .. ": a message over SIZE -> size, permanent, no MAIL sent", function()
        local r = run(serving(caps), send{ envelope = { from = FROM, to = { TO } },
          message = "Subject: big\r\n\r\n" .. string.rep("0123456789\r\n", 25) })
        failed(r, "size", { temporary = false })
        assert.equal("EHLO client.test\r\nQUIT\r\n", r.sent, ctx(r))
      end)
    end
  end)

  -- ---------------------------------------------------------------------------------
  describe("4. a read error is a failure", function()
    for _, path in ipairs(PATHS) do
      it(path.name .. ": message = io.open(\"/tmp\") (reads fail) -> argument, data not ended", function()
        local r = run(serving(path.caps), function(port)
          local f = assert(io.open("/tmp", "rb"))
          local res, err, info = smtp.send(conn_opts(port, { envelope = { from = FROM, to = { TO } },
                                                            message = f }))
          f:close()
          return res, err, info
        end)
        failed(r, "argument", { temporary = false })
        not_ended(r)
        clean(r)
      end)

      it(path.name .. ": send_many of message = io.open(\"/tmp\") -> argument, data not ended", function()
        local f = assert(io.open("/tmp", "rb"))
        local r = run(serving(path.caps), send_many{ { envelope = { from = FROM, to = { TO } }, message = f } })
        f:close()
        failed(entry(r, 1), "argument", { temporary = false })
        not_ended(r)
        clean(r)
      end)
    end

    it("message = nil (a failed io.open) with an envelope -> argument about the message", function()
      local r = run(serving(DATA_PATH.caps), send{ envelope = { from = FROM, to = { TO } },
        message = io.open("/nonexistent/guarantee_spec.eml", "rb") })
      failed(r, "argument", { temporary = false })
      assert.is_truthy(r.err:find("message", 1, true), "the text must name the message " .. ctx(r))
      assert.is_nil(r.err:find("from is required", 1, true), ctx(r))
      assert.equal(0, count_commands(r.items, "^MAIL "), ctx(r))
    end)
  end)

  -- ---------------------------------------------------------------------------------
  describe("5. BDAT framing", function()
    local SPLIT = { "Subject: t\r", "\n\r\n", "", "body\r", "", "\n", ".dot\r\n", "bare\n", "cr\r",
                    "next\r\n", "", "end\r\n" }
    local NORMAL = "Subject: t\r\n\r\nbody\r\n.dot\r\nbare\r\ncr\r\nnext\r\nend\r\n"
    local STUFFED = "Subject: t\r\n\r\nbody\r\n..dot\r\nbare\r\ncr\r\nnext\r\nend\r\n"

    -- No empty chunk except a final BDAT 0 LAST; exactly one LAST, the last one.
    local function well_framed(r)
      local list = bdat_items(r.items)
      assert.is_true(#list > 0, "no BDAT sent " .. ctx(r))
      for k, it in ipairs(list) do
        if it.size == 0 then
          assert.is_true(k == #list and it.last, "an empty BDAT chunk before the last " .. ctx(r))
        end
        assert.equal(k == #list, it.last, "LAST on chunk " .. k .. " of " .. #list .. " " .. ctx(r))
      end
    end

    for _, path in ipairs(BDAT_PATHS) do
      it(path.name .. ": CR/LF split across chunks, empty chunks -> exact CRLF payload, no BDAT 0", function()
        local r = run(serving(path.caps), send{ envelope = { from = FROM, to = { TO } },
          message = chunks(SPLIT) })
        succeeded(r)
        well_framed(r)
        assert.equal(NORMAL, payload(r.items), ctx(r))
        clean(r)
      end)
    end

    it("DATA: the same source goes out CRLF-normalised and dot-stuffed", function()
      local r = run(serving(DATA_PATH.caps), send{ envelope = { from = FROM, to = { TO } },
        message = chunks(SPLIT) })
      succeeded(r)
      assert.same({ STUFFED }, data_texts(r.items), ctx(r))
      assert.equal(1, ends_of_data(r.items), ctx(r))
      clean(r)
    end)

    for _, path in ipairs(PATHS) do
      it(path.name .. ": a raw message without a final line end gets CRLF", function()
        local r = run(serving(path.caps), send{ envelope = { from = FROM, to = { TO } },
          message = "Subject: x\r\n\r\nno newline" })
        succeeded(r)
        local want = "Subject: x\r\n\r\nno newline\r\n"
        if path.bdat then
          well_framed(r)
          assert.equal(want, payload(r.items), ctx(r))
        else
          assert.same({ want }, data_texts(r.items), ctx(r))
        end
        clean(r)
      end)

      it(path.name .. ": a function source ending in a lone CR ends with one CRLF", function()
        local r = run(serving(path.caps), send{ envelope = { from = FROM, to = { TO } },
          message = chunks{ "Subject: x\r\n\r\n", "ends with cr\r" } })
        succeeded(r)
        local want = "Subject: x\r\n\r\nends with cr\r\n"
        if path.bdat then
          well_framed(r)
          assert.equal(want, payload(r.items), ctx(r))
        else
          assert.same({ want }, data_texts(r.items), ctx(r))
        end
        clean(r)
      end)
    end

    it("BDAT without PIPELINING: 3 x 64 KB, each chunk waits for the reply to the one before", function()
      local blocks = {}
      for k, ch in ipairs({ "a", "b", "c" }) do
        blocks[k] = string.rep(string.rep(ch, 62) .. "\r\n", 1024)
      end
      -- The server reads a chunk, waits 0.2 s (nothing more may arrive), replies.
      local r = run(serving(BDAT_ALONE.caps, {
        { "^BDAT ", "250 2.0.0 chunk ok\r\n", last = "250 2.0.0 queued\r\n", silence = 0.2 },
      }), send{ envelope = { from = FROM, to = { TO } }, message = chunks(blocks) }, 30)
      succeeded(r)
      clean(r)
      well_framed(r)
      assert.is_true(payload(r.items) == table.concat(blocks), "payload differs " .. ctx(r))
    end)
  end)

  -- ---------------------------------------------------------------------------------
  describe("6. LMTP: one final reply per recipient", function()
    local MIXED = "250 2.0.0 <rcpt> delivered\r\n452 4.2.2 mailbox full\r\n250 2.0.0 <third> delivered\r\n"
    local BAD = "550 5.2.1 disabled\r\n452 4.2.2 mailbox full\r\n554 5.6.0 refused\r\n"
    local LMTP_DATA = { "PIPELINING", "ENHANCEDSTATUSCODES" }
    local LMTP_BDAT = { "PIPELINING", "CHUNKING", "ENHANCEDSTATUSCODES" }

    -- "promptly": the client's timeout is 10 s here, so a client that
    -- waited for a reply that never comes would take 10 s (or the server's
    -- 10 s); the bound (5 s) leaves room for a loaded 2-CPU machine. It is
    -- no speed target (those are bench/'s).
    local PROMPT = 5
    local function lmtp(caps, finals)
      return run(serving(caps, {
        { "^DATA$", "354 go ahead\r\n", data = finals },
        { "^BDAT ", "250 2.0.0 chunk ok\r\n", last = finals },
      }, "LHLO"), send{ protocol = "lmtp", timeout = 10, envelope = { from = FROM, to = { TO, TO2, TO3 } },
        message = RAW })
    end

    for _, v in ipairs({ { "BDAT", LMTP_BDAT }, { "DATA", LMTP_DATA } }) do
      it(v[1] .. ": 250, 452, 250 -> success for the 1st and 3rd, promptly", function()
        local r = lmtp(v[2], MIXED)
        local res = succeeded(r)
        assert.same({ TO, TO3 }, res.accepted, ctx(r))
        assert.equal(452, res.refused[TO2] and res.refused[TO2].code, ctx(r))
        assert.is_table(res.replies, ctx(r))
        assert.equal(250, res.replies[TO] and res.replies[TO].code, ctx(r))
        assert.equal(452, res.replies[TO2] and res.replies[TO2].code, ctx(r))
        assert.equal(250, res.replies[TO3] and res.replies[TO3].code, ctx(r))
        assert.is_true(r.elapsed < PROMPT, "took " .. r.elapsed .. " s " .. ctx(r))
        assert.equal(1, ends_of_data(r.items), ctx(r))
        clean(r)
      end)

      it(v[1] .. ": every final reply fails -> data, with info.replies", function()
        local r = lmtp(v[2], BAD)
        failed(r, "data")
        assert.is_table(r.info.replies, ctx(r))
        assert.equal(550, r.info.replies[TO] and r.info.replies[TO].code, ctx(r))
        assert.equal(452, r.info.replies[TO2] and r.info.replies[TO2].code, ctx(r))
        assert.equal(554, r.info.replies[TO3] and r.info.replies[TO3].code, ctx(r))
        assert.is_true(r.elapsed < PROMPT, "took " .. r.elapsed .. " s " .. ctx(r))
        clean(r)
      end)
    end
  end)

  -- ---------------------------------------------------------------------------------
  describe("7. replies never shift", function()
    -- Every reply to what the client sent before the pause, in one write,
    -- with the reply to the first MAIL twice.
    local function dup_mail(extra)
      local b = { { "^MAIL ", "250 2.1.0 ok\r\n250 2.1.0 ok\r\n", times = 1 } }
      for _, x in ipairs(extra or {}) do b[#b + 1] = x end
      for _, x in ipairs(rules()) do b[#b + 1] = x end
      return { batch = b, quiet = 0.3 }
    end

    it("DATA: a duplicated 250 to MAIL -> protocol, no body", function()
      local r = run(steps(opening(DATA_PATH.caps), dup_mail(), { serve = rules() }),
        send{ envelope = { from = FROM, to = { TO } }, message = RAW })
      failed(r, "protocol")
      assert.is_nil(r.sent:find(CANARY, 1, true), "the body was sent " .. ctx(r))
      clean(r)
    end)

    it("BDAT with PIPELINING: a duplicated 250 to MAIL -> protocol, no BDAT", function()
      local r = run(steps(opening(BDAT_PIPE.caps), dup_mail(), { serve = rules() }),
        send{ envelope = { from = FROM, to = { TO } }, message = RAW })
      failed(r, "protocol")
      no_bdat(r)
      clean(r)
    end)

    it("blind window = 2: a duplicated 250 to MAIL never turns a 550 to the data into a success", function()
      local list = {
        { envelope = { from = FROM, to = { TO } }, message = "Subject: m1\r\n\r\nbody\r\n" },
        { envelope = { from = FROM, to = { TO } }, message = "Subject: m2\r\n\r\nbody\r\n" },
      }
      local r = run(steps(opening(BDAT_PIPE.caps), dup_mail{
        { "^BDAT ", "250 2.0.0 chunk ok\r\n", last = "550 5.6.0 content refused\r\n", times = 1 },
      }, { serve = rules() }), send_many(list, { window = 2 }))
      local e1 = entry(r, 1)
      assert.is_nil(e1.res, "the message refused with 550 came back as a success " .. ctx(r))
      assert.is_string(e1.err, ctx(r))
    end)
  end)

  -- ---------------------------------------------------------------------------------
  describe("8. AUTH terminates", function()
    local AUTH_OPTS = { user = "alice", password = "secret", insecure_auth = true }

    local function connect_only(extra)
      return function(port)
        local o = conn_opts(port, AUTH_OPTS)
        for k, v in pairs(extra or {}) do o[k] = v end
        local s, err, info = smtp.connect(o)
        if not s then return nil, err, info end
        local mech = s.authenticated
        s:quit()
        return { authenticated = mech }
      end
    end

    it("a server answering every line with 334 -> auth or protocol, promptly, few lines", function()
      -- the server answers 334 for 10 s: a client that kept answering would
      -- take that long; the bound (5 s) leaves room for a loaded 2-CPU
      -- machine, it is no speed target
      local r = run(steps(opening({ "AUTH PLAIN LOGIN", "PIPELINING" }),
        { serve = { { "", "334 VXNlcm5hbWU6\r\n" } } }), connect_only{ auth = "LOGIN" }, 10)
      assert.is_nil(r.res, "connect succeeded " .. ctx(r))
      assert.is_table(r.info, ctx(r))
      assert.is_true(r.info.kind == "auth" or r.info.kind == "protocol", "kind " .. ctx(r))
      assert.is_true(r.elapsed < 5, "took " .. r.elapsed .. " s " .. ctx(r))
      local after, seen = 0, false
      for _, it_ in ipairs(r.items) do
        if seen then after = after + 1 end
        if it_.kind == "cmd" and it_.line:find("^AUTH ") then seen = true end
      end
      assert.is_true(seen, "AUTH never sent " .. ctx(r))
      assert.is_true(after <= 6, after .. " lines after AUTH " .. ctx(r))
    end)

    it("\"250-AUTH=PLAIN LOGIN\" alone is recognised: AUTH PLAIN is used", function()
      local r = run(steps(opening({ "AUTH=PLAIN LOGIN", "PIPELINING" }), { serve = rules{
        { "^AUTH PLAIN AGFsaWNlAHNlY3JldA==$", "235 2.7.0 authenticated\r\n" },
        { "^AUTH PLAIN$", "334 \r\n" },
        { "^AGFsaWNlAHNlY3JldA==$", "235 2.7.0 authenticated\r\n" },
      } }), connect_only())
      local res = succeeded(r)
      assert.equal("PLAIN", res.authenticated, ctx(r))
      assert.is_truthy(first_command(r.items, "^AUTH PLAIN"), ctx(r))
      clean(r)
    end)
  end)

  -- ---------------------------------------------------------------------------------
  describe("9. pipelining refused after the end of data (Haraka)", function()
    it("send_many of 2: the 2nd MAIL, chained to the 1st end of data, gets 503, is sent again", function()
      local list = {
        { envelope = { from = FROM, to = { TO } }, message = "Subject: h1\r\n\r\nbody\r\n" },
        { envelope = { from = FROM, to = { TO } }, message = "Subject: h2\r\n\r\nbody\r\n" },
      }
      local r = run(serving(DATA_PATH.caps, {
        { "^MAIL ", "503 5.5.0 pipelining after the end of data is not allowed\r\n", after_data = true,
          set = "nomail" },
        { "^MAIL ", "250 2.1.0 ok\r\n", clear = "nomail" },
        { "^RCPT ", "503 5.5.1 need MAIL first\r\n", when = "nomail" },
        { "^DATA$", "503 5.5.1 need RCPT first\r\n", when = "nomail" },
        { "^RSET$", "250 2.0.0 reset\r\n", clear = "nomail" },
        { "^DATA$", "354 go ahead\r\n", data = "250 2.0.0 Ok: queued as H1\r\n", times = 1 },
        { "^DATA$", "354 go ahead\r\n", data = "250 2.0.0 Ok: queued as H2\r\n" },
      }), send_many(list))
      local e1, e2 = entry(r, 1), entry(r, 2)
      local res1, res2 = succeeded(e1), succeeded(e2)
      assert.is_truthy(tostring(res1.message):find("H1", 1, true), ctx(r))
      assert.is_truthy(tostring(res2.message):find("H2", 1, true), ctx(r))
      assert.equal(3, count_commands(r.items, "^MAIL "), "MAIL commands " .. ctx(r))
      assert.equal(2, ends_of_data(r.items), ctx(r))
      clean(r)
    end)
  end)

  -- ---------------------------------------------------------------------------------
  describe("10. exact declarations", function()
    local BARE = "Subject: a\nFrom: x@y\n\nline\n"
    local BARE_CRLF = (BARE:gsub("\n", "\r\n"))

    for _, path in ipairs({ DATA_PATH, BDAT_PIPE }) do
      it(path.name .. ": SIZE= is the CRLF-normalised length of a bare-LF raw message", function()
        local caps = { "SIZE 1000000" }
        for _, c in ipairs(path.caps) do caps[#caps + 1] = c end
        local r = run(serving(caps), send{ envelope = { from = FROM, to = { TO } }, message = BARE })
        succeeded(r)
        local mail = first_command(r.items, "^MAIL ") or ""
        assert.equal(tostring(#BARE_CRLF), mail:match(" SIZE=(%d+)"), ctx(r))
        if path.bdat then
          assert.equal(BARE_CRLF, payload(r.items), ctx(r))
        else
          assert.same({ BARE_CRLF }, data_texts(r.items), ctx(r))
        end
        clean(r)
      end)

      it(path.name .. ": UTF-8 in a streamed header section -> SMTPUTF8 on MAIL", function()
        local caps = { "SMTPUTF8" }
        for _, c in ipairs(path.caps) do caps[#caps + 1] = c end
        local r = run(serving(caps), send{ envelope = { from = FROM, to = { TO } },
          message = chunks{ "Subject: h\195\169llo\r\n\r\n", "body\r\n" } })
        succeeded(r)
        local mail = first_command(r.items, "^MAIL ") or ""
        assert.is_truthy((mail .. " "):find(" SMTPUTF8 ", 1, true), "MAIL: " .. mail .. " " .. ctx(r))
        clean(r)
      end)
    end

    it("UTF-8 recipient, ASCII content, SMTPUTF8 without 8BITMIME -> sent", function()
      local r = run(serving({ "PIPELINING", "SMTPUTF8", "ENHANCEDSTATUSCODES" }),
        send{ envelope = { from = FROM, to = { UTF8_TO } }, message = RAW })
      succeeded(r)
      local mail = first_command(r.items, "^MAIL ") or ""
      assert.is_truthy((mail .. " "):find(" SMTPUTF8 ", 1, true), "MAIL: " .. mail)
      assert.is_nil(mail:find("8BITMIME", 1, true), "MAIL: " .. mail)
      assert.equal("RCPT TO:<" .. UTF8_TO .. ">", first_command(r.items, "^RCPT "), ctx(r))
      clean(r)
    end)

    describe("internationalised domains (IDNA2008, RFC 5891)", function()
      local IDN_TO = "user@b\195\188cher.example"          -- user@bücher.example
      local A_TO = "user@xn--bcher-kva.example"
      local NO_UTF8 = { "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES" }
      local UTF8 = { "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES" }

      it("without SMTPUTF8 the envelope carries A-labels; results name the address as given", function()
        local r = run(serving(NO_UTF8, { { "^RCPT TO:<" .. literal(A_TO) .. ">", "550 5.1.1 no such user\r\n" } }),
          send{ envelope = { from = FROM, to = { TO, IDN_TO } }, message = RAW })
        local res = succeeded(r)
        assert.equal("RCPT TO:<" .. A_TO .. ">", r.items[4].line, ctx(r))
        assert.is_nil((first_command(r.items, "^MAIL ") or ""):find("SMTPUTF8", 1, true), ctx(r))
        assert.same({ TO }, res.accepted)
        assert.equal(550, res.refused[IDN_TO].code)
        clean(r)
      end)

      it("with SMTPUTF8 the U-labels go as they are", function()
        local r = run(serving(UTF8), send{ envelope = { from = FROM, to = { IDN_TO } }, message = RAW })
        succeeded(r)
        assert.equal("RCPT TO:<" .. IDN_TO .. ">", first_command(r.items, "^RCPT "), ctx(r))
        assert.is_truthy((first_command(r.items, "^MAIL ") .. " "):find(" SMTPUTF8 ", 1, true), ctx(r))
        clean(r)
      end)

      it("a composed message writes A-labels in its address headers and needs no SMTPUTF8", function()
        local r = run(serving(NO_UTF8), send{ from = "Ann <ann@b\195\188cher.example>", to = IDN_TO,
          subject = "idn", text = "hi\n" })
        succeeded(r)
        local text = data_texts(r.items)[1] or ""
        assert.truthy(text:find("\r\nTo: " .. A_TO .. "\r\n", 1, true), text)
        assert.truthy(text:find("^From: Ann <ann@xn%-%-bcher%-kva%.example>\r\n"), text)
        assert.equal("MAIL FROM:<ann@xn--bcher-kva.example>", first_command(r.items, "^MAIL "), ctx(r))
        clean(r)
      end)

      it("a UTF-8 local part without SMTPUTF8: unsupported, nothing sent", function()
        local r = run(serving(NO_UTF8), send{ envelope = { from = FROM, to = { UTF8_TO } }, message = RAW })
        failed(r, "unsupported", { temporary = false })
        assert.equal(0, count_commands(r.items, "^MAIL "), ctx(r))
      end)

      it("an invalid IDN is an argument error naming the label, before connecting", function()
        for _, bad in ipairs({ { "user@a\216\167" .. "1.example", "a\216\1671" },
                               { "user@ex\226\153\165.com", "ex\226\153\165" } }) do
          local res, err, info = smtp.send{ host = "127.0.0.1", port = 9, envelope = { from = FROM, to = { bad[1] } },
                                            message = RAW }
          assert.is_nil(res)
          assert.equal("argument", info.kind, err)
          assert.truthy(err:find("invalid domain label \"" .. bad[2] .. "\"", 1, true), err)
        end
      end)
    end)

    it("a composed message with a UTF-8 Reply-To declares SMTPUTF8, or is refused before MAIL", function()
      local spec = { from = FROM, to = TO, reply_to = UTF8_TO, subject = "s", text = "ascii body\n" }
      local r = run(serving({ "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES" }), send(spec))
      succeeded(r)
      local mail = first_command(r.items, "^MAIL ") or ""
      assert.is_truthy((mail .. " "):find(" SMTPUTF8 ", 1, true), "MAIL: " .. mail)
      clean(r)
      r = run(serving({ "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES" }), send(spec))
      failed(r, "unsupported", { temporary = false })
      assert.equal(0, count_commands(r.items, "^MAIL "), ctx(r))
    end)

    it("dsn.orcpt with a UTF-8 recipient -> ORCPT=utf-8; with \\x{HEX} (RFC 6533)", function()
      local r = run(serving({ "PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES" }),
        send{ envelope = { from = FROM, to = { UTF8_TO } }, message = RAW, dsn = { orcpt = true } })
      succeeded(r)
      assert.equal("RCPT TO:<" .. UTF8_TO .. "> ORCPT=utf-8;j\\x{F6}rg@example.net",
        first_command(r.items, "^RCPT "), ctx(r))
      clean(r)
    end)
  end)

  -- ---------------------------------------------------------------------------------
  describe("11. the transcript is the wire", function()
    -- Bare LFs and no final line end: the framed size differs from the raw one.
    local PIECES = { "Subject: transcript\n", "\nline one\n", "line two" }
    local cases = {
      { name = "DATA without PIPELINING", caps = { "8BITMIME", "ENHANCEDSTATUSCODES" } },
      DATA_PATH, BDAT_PIPE, BDAT_ALONE,
    }
    for _, path in ipairs(cases) do
      it(path.name .. ": the command lines traced are exactly those sent, BDAT sizes included", function()
        local hook, lines = tracer()
        local r = run(serving(path.caps), send{ envelope = { from = FROM, to = { TO } },
          message = chunks(PIECES), debug = hook })
        succeeded(r)
        local traced = traced_commands(lines)
        for _, cmd in ipairs(traced) do
          assert.is_nil(cmd:find("^Subject:"), "a body line traced as a command: " .. cmd)
        end
        assert.same(command_lines(r.items), traced)
        clean(r)
      end)
    end

    -- A transport that keeps what each write handed over, around the C socket.
    local function recording(port)
      local sock = assert(require("smtp.transport.socket").connect("127.0.0.1", port, TIMEOUT))
      local writes = {}
      local t = {}
      function t.flush(_, eng)
        writes[#writes + 1] = eng:output()
        return sock:flush(eng)
      end
      function t.receive() return sock:receive() end
      function t.close() return sock:close() end
      return t, writes
    end

    -- Two messages (one larger than a write's worth) through one session;
    -- returns the writes the transport saw.
    local BIG = ("x"):rep(70) .. "\r\n"
    local function writes_of(path, hook)
      local writes
      local list = {
        { envelope = { from = FROM, to = { TO, TO2 } },
          message = chunks({ "Subject: one\r\n\r\n", BIG:rep(1200), "", "tail\r", "\n" }) },
        { envelope = { from = FROM, to = { TO } }, message = "Subject: two\r\n\r\nbody\r\n" },
      }
      local r = run(serving(path.caps), function(port)
        local t
        t, writes = recording(port)
        local s, err, info = smtp.connect(conn_opts(port, { transport = t, debug = hook }))
        if not s then return nil, err, info end
        local results = s:send_many(list)
        s:quit()
        return results
      end)
      succeeded(entry(r, 1))
      succeeded(entry(r, 2))
      clean(r)
      return writes
    end

    for _, path in ipairs(cases) do
      it(path.name .. ": debug does not change how writes are grouped on the wire", function()
        local quiet = writes_of(path, nil)
        local hook, lines = tracer()
        local traced = writes_of(path, hook)
        assert.is_true(#lines > 0)
        assert.equal(#quiet, #traced, "number of writes")
        for i = 1, #quiet do
          assert.equal(#quiet[i], #traced[i], "write " .. i .. " differs in size")
          assert.equal(quiet[i], traced[i], "write " .. i .. " differs")
        end
      end)
    end

    it("BDAT without PIPELINING: each chunk is traced after the reply to the one before", function()
      local hook, lines = tracer()
      local r = run(serving(BDAT_ALONE.caps), send{ envelope = { from = FROM, to = { TO } }, debug = hook,
        message = chunks({ "Subject: a\r\n\r\n", (("y"):rep(70) .. "\r\n"):rep(1000), "end\r\n" }) })
      succeeded(r)
      assert.is_true(#bdat_items(r.items) >= 2, "expected several chunks " .. ctx(r))
      local chunks_seen, replies_since = 0, 0
      for _, l in ipairs(lines) do
        if l.kind == "send" and tostring(l.text):find("^'BDAT ") then
          if chunks_seen > 0 then
            assert.is_true(replies_since > 0,
              "chunk " .. (chunks_seen + 1) .. " traced before the reply to the one before")
          end
          chunks_seen, replies_since = chunks_seen + 1, 0
        elseif l.kind == "reply" then
          replies_since = replies_since + 1
        end
      end
      assert.equal(#bdat_items(r.items), chunks_seen, ctx(r))
      clean(r)
    end)

    it("an incomplete reply line before the server closes appears in the transcript", function()
      local hook, lines = tracer()
      local r = run(steps(opening(DATA_PATH.caps), hear_start("MAIL FROM:"), hear_start("RCPT TO:"),
        hear("DATA"), say("250 2.1.0 ok\r\n250 2.1.5 ok\r\n451 4.3.0 half a li"), { close = true }),
        send{ envelope = { from = FROM, to = { TO } }, message = RAW, debug = hook })
      failed(r, "closed")
      local found = false
      for _, l in ipairs(lines) do
        if l.kind == "reply" and tostring(l.text):find("451 4.3.0 half a li", 1, true) then found = true end
      end
      assert.is_true(found, "the incomplete line is not in the transcript " .. ctx(r))
    end)

    it("a malformed reply line appears in the transcript", function()
      local hook, lines = tracer()
      local r = run(serving(DATA_PATH.caps, { { "^MAIL ", "2x0 ok\r\n" } }),
        send{ envelope = { from = FROM, to = { TO } }, message = RAW, debug = hook })
      failed(r, "protocol")
      local found = false
      for _, l in ipairs(lines) do
        if tostring(l.text):find("2x0 ok", 1, true) then found = true end
      end
      assert.is_true(found, "\"2x0 ok\" is not in the transcript " .. ctx(r))
    end)
  end)

  -- ---------------------------------------------------------------------------------
  describe("12. results say what came back", function()
    local QUEUED = { { "^DATA$", "354 go ahead\r\n", data = "250 2.0.0 Ok: queued as X\r\n" },
                     { "^BDAT ", "250 2.0.0 chunk ok\r\n", last = "250 2.0.0 Ok: queued as X\r\n" } }

    for _, path in ipairs(PATHS) do
      it(path.name .. ": res.message is the text after the enhanced code", function()
        local r = run(serving(path.caps, QUEUED), send{ envelope = { from = FROM, to = { TO } }, message = RAW })
        local res = succeeded(r)
        assert.equal(250, res.code, ctx(r))
        assert.equal("2.0.0", res.enhanced, ctx(r))
        assert.equal("Ok: queued as X", res.message, ctx(r))
        clean(r)
      end)
    end

    it("send_many: each result's message is its own final reply's text", function()
      local list = {
        { envelope = { from = FROM, to = { TO } }, message = "Subject: a\r\n\r\nbody\r\n" },
        { envelope = { from = FROM, to = { TO } }, message = "Subject: b\r\n\r\nbody\r\n" },
      }
      local r = run(serving(BDAT_PIPE.caps, {
        { "^BDAT ", "250 2.0.0 chunk ok\r\n", last = "250 2.0.0 Ok: queued as A\r\n", times = 1 },
        { "^BDAT ", "250 2.0.0 chunk ok\r\n", last = "250 2.0.0 Ok: queued as B\r\n" },
      }), send_many(list))
      assert.equal("Ok: queued as A", succeeded(entry(r, 1)).message, ctx(r))
      assert.equal("Ok: queued as B", succeeded(entry(r, 2)).message, ctx(r))
      clean(r)
    end)

    it("refused[rcpt].message is the text after the enhanced code", function()
      local r = run(serving(DATA_PATH.caps, {
        { "^RCPT TO:<" .. literal(TO2) .. ">", "550 5.1.1 No such user\r\n" },
      }), send{ envelope = { from = FROM, to = { TO, TO2 } }, message = RAW })
      local res = succeeded(r)
      assert.same({ TO }, res.accepted, ctx(r))
      local rep = res.refused[TO2] or {}
      assert.equal(550, rep.code, ctx(r))
      assert.equal("5.1.1", rep.enhanced, ctx(r))
      assert.equal("No such user", rep.message, ctx(r))
      clean(r)
    end)

    it("info.message is the text after the enhanced code", function()
      local r = run(serving(DATA_PATH.caps, { { "^MAIL ", "550 5.7.1 Sender rejected\r\n" } }),
        send{ envelope = { from = FROM, to = { TO } }, message = RAW })
      failed(r, "sender", { code = 550, enhanced = "5.7.1", message = "Sender rejected" })
      clean(r)
    end)

    it("s:noop() returns code, enhanced and message", function()
      local r = run(serving(DATA_PATH.caps, { { "^NOOP$", "250 2.0.0 Ok\r\n" } }), function(port)
        local s, err, info = smtp.connect(conn_opts(port))
        if not s then return nil, err, info end
        local res, e, i = s:noop()
        s:quit()
        return res, e, i
      end)
      local res = succeeded(r)
      assert.equal(250, res.code, ctx(r))
      assert.equal("2.0.0", res.enhanced, ctx(r))
      assert.equal("Ok", res.message, ctx(r))
      assert.equal("EHLO client.test\r\nNOOP\r\nQUIT\r\n", r.sent)
    end)

    local null_senders = {
      { "s:sendmail(\"<>\", ...)", sendmail("<>", { TO }, RAW) },
      { "s:sendmail(\"\", ...)", sendmail("", { TO }, RAW) },
      { "smtp.send{ from = \"<>\", message = raw }", send{ from = "<>", to = TO, message = RAW } },
    }
    for _, case in ipairs(null_senders) do
      it(case[1] .. " -> MAIL FROM:<>", function()
        local r = run(serving(DATA_PATH.caps), case[2])
        succeeded(r)
        assert.equal("MAIL FROM:<>", first_command(r.items, "^MAIL "), ctx(r))
        clean(r)
      end)
    end

    local bad_inputs = {
      { "CR LF in envelope.from", send{ envelope = { from = "a@example.org\r\nRSET", to = { TO } },
                                        message = RAW } },
      { "LF in a sendmail recipient", sendmail(FROM, { "x@example.net\nDATA" }, RAW) },
      { "CR LF in a composed message's to", send{ from = FROM, to = "Bob\r\n <b@example.net>",
                                                 subject = "s", text = "t\n" } },
    }
    for _, case in ipairs(bad_inputs) do
      it("the error text is one line: " .. case[1], function()
        local r = run(serving(DATA_PATH.caps), case[2])
        failed(r, "argument", { temporary = false })
        single_line(r)
        assert.equal(0, count_commands(r.items, "^MAIL "), ctx(r))
      end)
    end

    it("the error text is one line: a multiline reply to MAIL", function()
      local r = run(serving(DATA_PATH.caps, {
        { "^MAIL ", "550-5.7.1 first line\r\n550 5.7.1 second line\r\n" },
      }), send{ envelope = { from = FROM, to = { TO } }, message = RAW })
      failed(r, "sender", { code = 550 })
      single_line(r)
    end)
  end)
end)
