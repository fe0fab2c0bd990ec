-- Transactions on a session: one, or a window of them, pipelined when the
-- server allows it, on the session's one driver loop (Session:_step). With
-- PIPELINING the next transaction travels with the previous end of data (one
-- round trip per message). No octet of a message leaves before its MAIL and
-- RCPT replies are in (DATA's 354; with CHUNKING the first BDAT waits for the
-- RCPT replies) unless the caller asked for a blind window (window > 1).
-- Each transaction keeps its own record (what was written, which replies
-- came), and its result and stage come from that record alone.
local core = require "smtp.core"
local errors = require "smtp.errors"
local transcript = require "smtp.transcript"
local ext = require "smtp.extensions"
local address = require "smtp.address"

local M = {}

-- Body pieces handed to the engine at once, and how much output may build
-- up before it is written: large enough to be cheap, small enough to keep
-- memory flat whatever the message size.
local CHUNK = 65536

local function is_2xx(code) return code >= 200 and code < 300 end

-- checked: optional memo { [address] = its ASCII form } of addresses that
-- passed already (within one batch the same addresses recur); filled here.
function M.check_envelope(from, to, checked)
  if type(from) ~= "string" then return errors.fail("argument", "the envelope sender must be a string") end
  if type(to) ~= "table" then return errors.fail("argument", "the envelope recipients must be a list") end
  if #to == 0 then return errors.fail("argument", "no recipients") end
  if not (checked and checked[from]) then
    if not core.valid_address(from) then
      return errors.fail("argument", "invalid sender address " .. errors.quote(from))
    end
  end
  for _, rcpt in ipairs(to) do
    if not (checked and checked[rcpt]) and
        (type(rcpt) ~= "string" or rcpt == "" or not core.valid_address(rcpt)) then
      return errors.fail("argument", "invalid recipient address " .. errors.quote(rcpt))
    end
  end
  -- An internationalised domain must be a valid IDN whatever the server
  -- offers: say so before anything is sent.
  local ascii, err = checked and checked[from]
  if not ascii then
    ascii, err = address.ascii_domain(from)
    if not ascii then return errors.fail("argument", err) end
    if checked then checked[from] = ascii end
  end
  for _, rcpt in ipairs(to) do
    ascii = checked and checked[rcpt]
    if not ascii then
      ascii, err = address.ascii_domain(rcpt)
      if not ascii then return errors.fail("argument", err) end
      if checked then checked[rcpt] = ascii end
    end
  end
  return true
end

-- Reads the next string from a message source; nil at the end, or
-- nil, message, kind when the source failed (kind "source" unless the
-- source said otherwise with an error table { kind =, message = }).
local function next_chunk(source)
  local chunk, err = source()
  if chunk == nil then
    if type(err) == "table" then
      return nil, tostring(err.message), errors.is_code(err.kind) and err.kind or "source"
    end
    if err then return nil, tostring(err) end
    return nil
  end
  if type(chunk) ~= "string" then return nil, "message source returned a " .. type(chunk) end
  return chunk
end

-- Streams a body after 354. Output is written whenever a chunk's worth has
-- built up; the end of data stays in the engine, so it leaves in the same
-- write as the last body bytes and the next transaction's commands.
local function write_data(self, source)
  local eng = self.engine
  local preview, total = self.trace and {} or nil, 0
  while true do
    local chunk, serr, skind = next_chunk(source)
    if not chunk then
      if serr then return nil, skind or "source", serr end
      break
    end
    if preview and total < transcript.body_preview then
      preview[#preview + 1] = chunk:sub(1, transcript.body_preview - total)
    end
    total = total + #chunk
    local i = 1
    while i <= #chunk do
      local piece = (i == 1 and #chunk <= CHUNK) and chunk or chunk:sub(i, i + CHUNK - 1)
      local ok, code, msg = eng:body(piece)
      if not ok then return nil, code, msg end
      i = i + #piece
      if eng:pending() >= CHUNK then
        ok, code, msg = self:_flush(true)
        if not ok then return nil, code, msg end
      end
    end
  end
  -- Everything queued so far is message data, and so is the end of data
  -- unless ending it released commands held for it: mark it traced, so the
  -- end of data stays in the engine with or without a transcript.
  if preview then self:_trace_output(false) end
  local held = preview and eng:staged()
  eng:body_end()
  if preview then
    if held == 0 then self:_trace_output(false) end
    self.trace("send", transcript.preview(table.concat(preview), total))
  end
  return true
end

-- Streams a body as BDAT chunks; the last data chunk carries LAST (an
-- empty message is one empty BDAT LAST). The engine frames each piece and
-- says how many octets its chunk holds: that is what the transcript shows,
-- and a piece that framed to nothing is no chunk at all. await(): without
-- PIPELINING, waits for the reply to the chunk before the next one is read,
-- so memory stays flat; nil, code, msg when the session ended meanwhile.
local function write_chunks(self, source, await)
  local eng, trace = self.engine, self.trace
  -- Commands still queued (blind: this transaction's MAIL and RCPT) are
  -- traced before the first chunk; they leave with it.
  if trace then self:_trace_output(true) end
  local cur, serr, skind = next_chunk(source)
  if serr then return nil, skind or "source", serr end
  local sent = false
  while cur do
    local nxt
    nxt, serr, skind = next_chunk(source)
    if serr then return nil, skind or "source", serr end
    local i = 1
    repeat
      local piece = (i == 1 and #cur <= CHUNK) and cur or cur:sub(i, i + CHUNK - 1)
      i = i + #piece
      local last = nxt == nil and i > #cur
      local ok, size, msg = eng:bdat(piece, last)
      if not ok then return nil, size, msg end
      local chunk = size > 0 or last
      sent = sent or chunk
      if eng:pending() >= CHUNK then
        local fok, fcode, fmsg = self:_flush(true)
        if not fok then return nil, fcode, fmsg end
      end
      if eng:staged() > 0 then
        -- Held for the previous chunk's reply: it is written (and traced)
        -- only once that reply came.
        local aok, acode, amsg = await()
        if not aok then return nil, acode, amsg end
        if aok == "stop" then return true end   -- a chunk was refused
      end
      if trace and chunk then
        trace("send", transcript.repr(string.format("BDAT %d%s\r\n", size, last and " LAST" or "")))
        trace("send", transcript.preview(piece:sub(1, transcript.body_preview), #piece))
        self:_trace_output(false)
      end
    until i > #cur
    cur = nxt
  end
  if not sent then
    eng:bdat("", true)
    if eng:staged() > 0 then
      local aok, acode, amsg = await()
      if not aok then return nil, acode, amsg end
      if aok == "stop" then return true end
    end
    if trace then
      trace("send", transcript.repr("BDAT 0 LAST\r\n"))
      self:_trace_output(false)
    end
  end
  return true
end

-- "every recipient was refused: a@x (550 5.1.1 ...), ..."
local function refused_summary(rec)
  local list = {}
  for _, rcpt in ipairs(rec.job.envelope.to) do
    local rep = rec.refused[rcpt]
    if rep then
      list[#list + 1] = rcpt .. " (" .. errors.describe(rep.code, rep.enhanced, rep.message) .. ")"
    end
  end
  return "every recipient was refused: " .. table.concat(list, ", ")
end

local function outcome_failed(self, rec, fail, code, enhanced, text, cmd)
  local extra = { refused = rec.refused, accepted = rec.accepted }
  local summary
  if fail == "recipients" then
    -- Worth retrying only when every refusal was temporary.
    extra.temporary = true
    for _, rep in pairs(rec.refused) do
      if rep.code >= 500 then extra.temporary = false end
    end
    summary = refused_summary(rec)
  end
  if self.lmtp and fail == "data" and next(rec.replies) then
    extra.replies = rec.replies
  end
  return { self:_failure(fail, code, enhanced, text, nil, cmd, extra, summary) }
end

local function outcome_done(self, rec, code, enhanced, text)
  local res = { accepted = rec.accepted, refused = rec.refused, code = code,
                enhanced = enhanced, message = errors.text(enhanced, text), message_id = rec.job.message_id }
  if self.lmtp then
    -- Under LMTP a recipient is delivered only if its own final reply is 2xx.
    local delivered = {}
    for _, rcpt in ipairs(rec.accepted) do
      local rep = rec.replies[rcpt]
      if rep and is_2xx(rep.code) then
        delivered[#delivered + 1] = rcpt
      elseif rep then
        res.refused[rcpt] = rep
      end
    end
    res.accepted, res.replies = delivered, rec.replies
  end
  return { res }
end

-- The stage a transaction in flight reached, from its own record: its end
-- of data counts as written only once the transport took every octet up to
-- it (rec.end_at, an engine output position), never when merely queued.
local function stage_reached(eng, rec)
  if rec.end_at and eng:sent() >= rec.end_at then return "data_end" end
  if not rec.mail_replied then return "mail" end
  if rec.rcpt_replied < #rec.job.envelope.to then return "rcpt" end
  return "data"
end

-- What the caller learns about a transaction in flight when the connection
-- is lost: after the end of data its fate is unknown; before, it was not sent.
local function outcome_lost(eng, rec, kind, text)
  local stage = stage_reached(eng, rec)
  local info = { stage = stage, temporary = kind ~= "tls", accepted = rec.accepted,
                 refused = rec.refused }
  if stage == "data_end" then
    return { errors.fail(kind, text .. " after the end of data was sent: the server may or may" ..
      " not have accepted the message", info) }
  end
  return { errors.fail(kind, text .. " (waiting for the reply to " .. stage ..
    "): the message was not sent", info) }
end

-- jobs: array of { envelope = { from, to }, source = fn, size = n,
-- message_id = s, dsn = t, eightbit = b, utf8_headers = b } or
-- { failed = { nil, err, info } }. The MAIL and RCPT parameters come from
-- extensions.params (the job's dsn, eightbit and utf8_headers).
-- opts: window (transactions in flight; given as more than 1, it also opts
-- into blind BDAT: bodies sent before the envelope replies), chunking (false
-- to use DATA). Returns one { res } or { nil, err, info } per job, in order.
function M.submit(self, jobs, opts)
  opts = opts or {}
  local eng = self.engine
  -- results.started[i] / results.ended[i]: when transaction i began (its
  -- MAIL was staged) and ended (its outcome came), for its report.
  local started, ended = {}, {}
  local results, recs = { started = started, ended = ended }, {}
  local n, nextj, inflight = #jobs, 1, 0
  local asked = opts.window or self.window
  local window = asked or 8
  local use_bdat = opts.chunking ~= false and self.chunking ~= false and
    self.capabilities and self.capabilities.CHUNKING ~= nil
  -- By default no octet of a message leaves before its MAIL and RCPT replies
  -- are in (as with DATA's 354); a window the caller asked for is blind.
  local blind = use_bdat and asked ~= nil and asked > 1
  local awaiting_body
  local finished   -- the results, once the session has ended
  local retry, retried = {}, {}   -- jobs to start again, unchained (see outcome)
  local checked = {}   -- addresses of this batch found valid: their ASCII form

  local function fail_rest(kind, text)
    for _, rec in pairs(recs) do results[rec.i] = outcome_lost(eng, rec, kind, text) end
    recs = {}
    for i = 1, n do
      if not results[i] then
        results[i] = { errors.fail("closed", "the session ended before this message was started: " ..
          text .. "; the message was not sent", { stage = "pending", temporary = true }) }
      end
    end
    finished = results
    return results
  end

  local function lost(code, msg)
    self:close()
    return fail_rest(errors.kind_of(code), msg or code)
  end

  -- A broken body: no end of data may follow it. Closing the connection
  -- makes the server discard what it got.
  local function abandon(rec, code, msg)
    local kind = errors.kind_of(code)
    if kind == "argument" or kind == "unsupported" or kind == "size" then
      self:close()
      if rec then
        results[rec.i] = { errors.fail(kind, msg .. "; the message was not sent",
          { stage = "data", temporary = false, accepted = rec.accepted, refused = rec.refused }) }
        for id, r in pairs(recs) do if r == rec then recs[id] = nil end end
      end
      return fail_rest("closed", "the session was closed after a message could not be sent")
    end
    return lost(code, msg)
  end

  local function outcome(kind, txn, code, enhanced, text, fail, cmd)
    local rec = recs[txn]
    recs[txn] = nil
    inflight = inflight - 1
    rec.reported = true
    if rec == awaiting_body then awaiting_body = nil end
    if kind == "failed" and fail == "sender" and code == 503 and rec.chained and
        not retried[rec.i] and not rec.body_started then
      -- Some servers (Haraka) refuse a MAIL pipelined after an end of data
      -- with 503: that says nothing of the sender. Stop chaining and send
      -- this transaction once more on its own.
      self.no_chaining, retried[rec.i] = true, true
      retry[#retry + 1] = rec.i
      return
    end
    ended[rec.i] = core.now()
    if kind == "done" then
      results[rec.i] = outcome_done(self, rec, code, enhanced, text)
    else
      results[rec.i] = outcome_failed(self, rec, fail, code, enhanced, text, cmd)
    end
  end

  -- What a transaction's events mean, for the session's driver loop.
  local handlers = {
    reply = function(cmd, index, code, enhanced, text, txn)
      local rec = txn and recs[txn]
      if not rec then return end
      if cmd == "mail" then
        rec.mail_replied = true
      elseif cmd == "rcpt" then
        rec.rcpt_replied = rec.rcpt_replied + 1
        local rcpt = rec.job.envelope.to[index]
        if is_2xx(code) then
          rec.accepted[#rec.accepted + 1] = rcpt
        else
          rec.refused[rcpt] = errors.reply(code, enhanced, text)
        end
      elseif self.lmtp and index and (cmd == "dot" or cmd == "bdat") then
        local rcpt = rec.accepted[index]
        if rcpt then rec.replies[rcpt] = errors.reply(code, enhanced, text) end
      end
    end,
    body = function()
      local rec = awaiting_body
      awaiting_body = nil
      rec.body_started = true
      self._wrote_body = true   -- no retry on a fresh connection after this (session.lua)
      local wok, wcode, wmsg = write_data(self, rec.source)
      if not wok then return abandon(rec, wcode, wmsg) end
      rec.end_at = eng:written()
    end,
    outcome = outcome,
  }

  -- One turn of the driver loop for this window of transactions. Returns
  -- "idle" when the engine has nothing in flight, the results when the
  -- session ended, or nil. quiet: the output holds message data.
  local function pump(quiet)
    local r, a, b, c, d, e, f, g = self:_step(handlers, quiet)
    if r == "lost" then return lost(a, b) end
    if r == "bad" then return fail_rest("protocol", a) end
    if r == "op" then
      -- The session itself failed (a malformed reply, a 421): every
      -- transaction in flight and every one not started fails with it.
      local code = c
      local _, err, info = self:_failure(f, c, d, e, g, b, {})
      self:close()
      for _, rec in pairs(recs) do
        local e2 = {}
        for k, v in pairs(info) do e2[k] = v end
        e2.accepted, e2.refused = rec.accepted, rec.refused
        -- A reply (a 421) names the command it answered; but an end of
        -- data already written stays "may have been accepted".
        e2.stage = stage_reached(eng, rec)
        if e2.stage ~= "data_end" and code then e2.stage = info.stage end
        results[rec.i] = { nil, err, e2 }
      end
      recs = {}
      return fail_rest(info.kind, err)
    end
    return r
  end

  -- Runs the engine until cond() holds or it has nothing left in flight.
  local function pump_until(cond, quiet)
    while not cond() do
      local r = pump(quiet)
      if finished then return nil end
      if r == "idle" then break end
    end
    return true
  end

  -- Starts job i; false, code, msg when the session must be abandoned
  -- (rec: the transaction whose body failed, if any).
  local function start(i)
    local job = jobs[i]
    if job.failed then results[i] = job.failed return true end
    if eng:dead() then
      -- The server broke the session (bytes nobody asked for): no command
      -- may follow, whatever the last outcome was.
      nextj = i
      return false, "closed", "the session is no longer usable"
    end
    local env = job.envelope
    local valid, verr, vinfo = M.check_envelope(env.from, env.to, checked)
    if not valid then results[i] = { nil, verr, vinfo } return true end
    local params, perr, pinfo = ext.params(self.capabilities, job, checked)
    if not params then results[i] = { nil, perr, pinfo } return true end
    local source = params.guard and ext.seven_bit_only(job.source) or job.source
    local ok, code, msg = eng:mail(params.from, job.size or 0, params.mail)
    if not ok then
      results[i] = { errors.fail(code == "size" and "size" or "argument", msg, { stage = "mail" }) }
      return true
    end
    local id = code  -- on success: the transaction's id
    started[i], ended[i] = core.now(), nil
    for _, rcpt in ipairs(params.to) do
      local rok, _, rmsg = eng:rcpt(rcpt, params.rcpt and params.rcpt(rcpt))
      if not rok then
        -- Addresses were checked, so only a limit gets here; what is
        -- staged cannot be taken back.
        results[i] = { errors.fail("argument", rmsg, { stage = "rcpt" }) }
        self:close()
        return false, "closed", "too many recipients for one session"
      end
    end
    local rec = { i = i, job = job, source = source, accepted = {}, refused = {},
                  replies = self.lmtp and {} or nil,
                  rcpt_replied = 0, chained = inflight > 0 }
    recs[id] = rec
    inflight = inflight + 1
    if not use_bdat then
      eng:data()
      awaiting_body = rec
      return true
    end
    if not blind then
      -- The transaction exists only once its envelope replies are in: run
      -- until the engine has nothing in flight (it reports a refused
      -- envelope as this transaction's failure first).
      if not pump_until(function() return rec.reported end) then return true end
      if rec.reported then return true end
    end
    rec.body_started = true
    self._wrote_body = true
    local wok, wcode, wmsg = write_chunks(self, source, function()
      if not pump_until(function() return eng:staged() == 0 or rec.reported end, true) then
        return nil, "ended"
      end
      -- What was released goes out now, as message data: the main loop
      -- would trace it as commands.
      local fok, fcode, fmsg = self:_flush(true)
      if not fok then return nil, fcode, fmsg end
      return rec.reported and "stop" or true
    end)
    if finished then return true end
    if not wok then return false, wcode, wmsg, rec end
    rec.end_at = eng:written()
    return true
  end

  while true do
    while (retry[1] or nextj <= n) and not awaiting_body and inflight < window and
        ((inflight == 0 and eng:transactions() == 0) or (eng:can_chain() and not self.no_chaining)) do
      local i = retry[1] and table.remove(retry, 1)
      if not i then
        i = nextj
        nextj = nextj + 1
      end
      local ok, code, msg, rec = start(i)
      if finished then return finished end
      if not ok then return abandon(rec, code, msg) end
    end
    if inflight == 0 and nextj > n and not retry[1] then return results end
    local r = pump()
    if finished then return finished end
    if r == "idle" and not awaiting_body then
      error("smtp: engine idle while transactions were expected")
    end
  end
end

return M
