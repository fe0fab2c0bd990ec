-- Submitting messages: one or many transactions on a session, pipelined
-- when the server allows it. With PIPELINING the next transaction travels
-- with the previous end of data (one round trip per message); with
-- CHUNKING a window of transactions is in flight at once, each body sent
-- as BDAT chunks without waiting for a go-ahead.
local core = require "smtp.core"
local errors = require "smtp.errors"
local debug = require "smtp.debug"
local ext = require "smtp.extensions"

local M = {}

-- Body pieces handed to the engine at once, and how much output may build
-- up before it is written: large enough to be cheap, small enough to keep
-- memory flat whatever the message size.
local CHUNK = 65536

local function is_2xx(code) return code >= 200 and code < 300 end

function M.check_envelope(from, to)
  if type(from) ~= "string" then return errors.fail("argument", "the envelope sender must be a string") end
  if type(to) ~= "table" then return errors.fail("argument", "the envelope recipients must be a list") end
  if #to == 0 then return errors.fail("argument", "no recipients") end
  if not core.valid_address(from) then
    return errors.fail("argument", "invalid sender address " .. string.format("%q", from))
  end
  for _, rcpt in ipairs(to) do
    if type(rcpt) ~= "string" or rcpt == "" or not core.valid_address(rcpt) then
      return errors.fail("argument", "invalid recipient address " .. string.format("%q", tostring(rcpt)))
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
    if type(err) == "table" then return nil, tostring(err.message), err.kind end
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
    if preview and total < debug.body_preview then preview[#preview + 1] = chunk:sub(1, debug.body_preview - total) end
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
  eng:body_end()
  if preview then
    local ok, code, msg = self:_flush(true)
    self.trace("send", debug.preview(table.concat(preview), total))
    if not ok then return nil, code, msg end
  end
  return true
end

-- Streams a body as BDAT chunks; the last data chunk carries LAST (an
-- empty message is one empty BDAT LAST).
local function write_chunks(self, source)
  local eng, trace = self.engine, self.trace
  if trace then
    local ok, code, msg = self:_flush()   -- MAIL and RCPT lines, traced as commands
    if not ok then return nil, code, msg end
  end
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
      local ok, code, msg = eng:bdat(piece, last)
      if not ok then return nil, code, msg end
      sent = true
      if trace then
        trace("send", debug.repr(string.format("BDAT %d%s\r\n", #piece, last and " LAST" or "")))
        trace("send", debug.preview(piece:sub(1, debug.body_preview), #piece))
      end
      if trace or eng:pending() >= CHUNK then
        ok, code, msg = self:_flush(true)
        if not ok then return nil, code, msg end
      end
    until i > #cur
    cur = nxt
  end
  if not sent then
    eng:bdat("", true)
    if trace then
      trace("send", debug.repr("BDAT 0 LAST\r\n"))
      local ok, code, msg = self:_flush(true)
      if not ok then return nil, code, msg end
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
                enhanced = enhanced, message = text, message_id = rec.job.message_id }
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

-- What the caller learns about a transaction in flight when the connection
-- is lost: after the end of data its fate is unknown.
local function outcome_lost(rec, kind, text, stage)
  if kind == "tls" then
    return { errors.fail(kind, text .. " (waiting for the reply to " .. (stage or "data") .. ")",
      { stage = stage or "data", temporary = false, accepted = rec.accepted, refused = rec.refused }) }
  end
  if rec.body_done then
    return { errors.fail(kind, text .. " after the end of data was sent: the server may or may" ..
      " not have accepted the message", { stage = "data_end", temporary = true,
        accepted = rec.accepted, refused = rec.refused }) }
  end
  return { errors.fail(kind, text .. " (waiting for the reply to " .. (stage or "data") ..
    "): the message was not sent", { stage = stage or "data", temporary = true,
      accepted = rec.accepted, refused = rec.refused }) }
end

-- jobs: array of { envelope = { from, to, mail_params, rcpt_params },
-- source = fn, size = n, message_id = s } or { failed = { nil, err, info } }.
-- opts: window (transactions in flight with CHUNKING), chunking (false to
-- use DATA). Returns one { res } or { nil, err, info } per job, in order.
function M.submit(self, jobs, opts)
  opts = opts or {}
  local eng = self.engine
  local results, recs = {}, {}
  local n, nextj, inflight = #jobs, 1, 0
  local window = opts.window or self.window or 8
  local use_bdat = opts.chunking ~= false and self.chunking ~= false and
    self.capabilities and self.capabilities.CHUNKING ~= nil
  local awaiting_body, last_cmd, body_rec

  local function fail_rest(kind, text, stage)
    for _, rec in pairs(recs) do results[rec.i] = outcome_lost(rec, kind, text, stage) end
    for i = nextj, n do
      if not results[i] then
        results[i] = { errors.fail("closed", "the session ended before this message was started: " ..
          text, { stage = "mail", temporary = true }) }
      end
    end
    return results
  end

  local function lost(code, msg)
    local stage = ({ mail = "mail", rcpt = "rcpt", data = "data", dot = "data_end",
                     bdat = "data_end", rset = "mail" })[eng:waiting_for()]
    self:close()
    local kind = ({ timeout = "timeout", connect = "connect", tls = "tls" })[code] or "closed"
    return fail_rest(kind, msg or code, stage)
  end

  -- Starts job i; false, code, msg when the session must be abandoned.
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
    local valid, verr, vinfo = M.check_envelope(env.from, env.to)
    if not valid then results[i] = { nil, verr, vinfo } return true end
    local params, perr, pinfo = ext.params(self.capabilities, job)
    if not params then results[i] = { nil, perr, pinfo } return true end
    local source = params.guard and ext.seven_bit_only(job.source) or job.source
    local ok, code, msg = eng:mail(env.from, job.size or 0, params.mail)
    if not ok then
      results[i] = { errors.fail(code == "size" and "size" or "argument", msg, { stage = "mail" }) }
      return true
    end
    local id = code  -- on success: the transaction's id
    for _, rcpt in ipairs(env.to) do
      local rok, _, rmsg = eng:rcpt(rcpt, params.rcpt and params.rcpt(rcpt))
      if not rok then
        -- Addresses were checked, so only a limit gets here; what is
        -- staged cannot be taken back.
        results[i] = { errors.fail("argument", rmsg, { stage = "rcpt" }) }
        self:close()
        return false, "closed", "too many recipients for one session"
      end
    end
    local rec = { i = i, job = job, source = source, accepted = {}, refused = {}, replies = {} }
    recs[id] = rec
    inflight = inflight + 1
    if use_bdat then
      body_rec = rec
      local wok, wcode, wmsg = write_chunks(self, source)
      body_rec = nil
      if not wok then return false, wcode, wmsg end
      rec.body_done = true
    else
      eng:data()
      awaiting_body = rec
    end
    return true
  end

  -- A broken body: no end of data may follow it. Closing the connection
  -- makes the server discard what it got.
  local function abandon(rec, code, msg)
    if code == "line" or code == "source" or code == "unsupported" then
      self:close()
      if rec then
        results[rec.i] = { errors.fail(code == "unsupported" and code or "argument",
          msg .. "; the message was not sent", { stage = "data", temporary = false }) }
        for id, r in pairs(recs) do if r == rec then recs[id] = nil end end
      end
      return fail_rest("closed", "the session was closed after a message could not be sent")
    end
    return lost(code, msg)
  end

  while true do
    while nextj <= n and not awaiting_body and inflight < window and
        ((inflight == 0 and eng:transactions() == 0) or eng:can_chain()) do
      local i = nextj
      nextj = nextj + 1
      local ok, code, msg = start(i)
      if not ok then return abandon(body_rec, code, msg) end
    end
    if inflight == 0 and nextj > n then return results end

    local ok, fcode, fmsg = self:_flush()
    if not ok then return lost(fcode, fmsg) end
    local kind, cmd, index, code, enhanced, text, fail, perr, txn = eng:next()
    if kind == "need_input" then
      if eng:pending() == 0 then
        local read, why, rcode, rmsg = self:_read()
        if not read then
          if why == "lost" then return lost(rcode, rmsg) end
          return fail_rest("protocol", rcode)
        end
      end
    elseif kind == "reply" then
      last_cmd = cmd
      if self.trace then self:_trace_reply(cmd, code, text) end
      local rec = txn and recs[txn]
      if rec and cmd == "rcpt" then
        local rcpt = rec.job.envelope.to[index]
        if is_2xx(code) then
          rec.accepted[#rec.accepted + 1] = rcpt
        else
          rec.refused[rcpt] = errors.reply(code, enhanced, text)
        end
      elseif rec and self.lmtp and index and (cmd == "dot" or cmd == "bdat") then
        local rcpt = rec.accepted[index]
        if rcpt then rec.replies[rcpt] = errors.reply(code, enhanced, text) end
      end
    elseif kind == "need_body" then
      local rec = awaiting_body
      awaiting_body = nil
      local wok, wcode, wmsg = write_data(self, rec.source)
      if not wok then return abandon(rec, wcode, wmsg) end
      rec.body_done = true
    elseif (kind == "done" or kind == "failed") and txn then
      local rec = recs[txn]
      recs[txn] = nil
      inflight = inflight - 1
      if rec == awaiting_body then awaiting_body = nil end
      if kind == "done" then
        results[rec.i] = outcome_done(self, rec, code, enhanced, text)
      else
        results[rec.i] = outcome_failed(self, rec, fail, code, enhanced, text, cmd)
      end
    elseif kind == "failed" then
      -- The session itself failed (a malformed reply, a 421): every
      -- transaction in flight and every one not started fails with it.
      if cmd == "none" then cmd = last_cmd end
      local _, err, info = self:_failure(fail, code, enhanced, text, perr, cmd, {})
      self:close()
      for _, rec in pairs(recs) do
        local e2 = {}
        for k, v in pairs(info) do e2[k] = v end
        e2.accepted, e2.refused = rec.accepted, rec.refused
        if rec.body_done and fail ~= "closing" then e2.stage = "data_end" end
        results[rec.i] = { nil, err, e2 }
      end
      recs = {}
      return fail_rest(info.kind, err)
    else
      error("smtp: unexpected engine event '" .. tostring(kind) .. "' while submitting")
    end
  end
end

return M
