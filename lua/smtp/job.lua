-- Preparing one message for submission: its envelope, its source (the
-- chunks of the message as they go on the wire), its size on the wire when
-- known, and what it must declare (8BITMIME, SMTPUTF8, DSN). Everything here
-- runs before a connection exists, so bad input fails before anything is sent.
local core = require "smtp.core"
local errors = require "smtp.errors"
local address = require "smtp.address"
local message = require "smtp.message"
local ext = require "smtp.extensions"
local dkim = require "smtp.dkim"

local M = {}

local READ_BLOCK = 65536

-- A message source from what the caller gave: a raw string, an open file,
-- a function returning chunks, or a message object. Returns source, size
-- (nil when unknown) or nil, err, info.
local function raw_source(raw)
  if type(raw) == "string" then
    local ok, eightbit, head8, wire_size = core.inspect(raw)
    if not ok then
      return errors.fail("argument", head8 .. "; encode the body", { stage = "data" })
    end
    local done = false
    return function()
      if done then return nil end
      done = true
      return raw
    end, wire_size, eightbit, head8
  end
  if io.type(raw) == "file" then
    -- A file that cannot be read (a directory, a closed stream) is the
    -- caller's problem, found before anything is sent.
    local _, perr = raw:read(0)
    if perr then
      return errors.fail("argument", "cannot read the message file: " .. tostring(perr))
    end
    local checker = core.framer()
    return function()
      local block, rerr = raw:read(READ_BLOCK)
      if not block and rerr then
        -- A read error is not the end of the file: the data must not end.
        return nil, "reading the message failed: " .. tostring(rerr)
      end
      if block then
        local ok, _, lmsg = checker:check(block)
        if not ok then return nil, lmsg end
      end
      return block
    end, nil   -- its size on the wire is unknown until read (bare LFs grow)
  end
  if type(raw) == "function" then
    local checker = core.framer()
    return function()
      local chunk, err = raw()
      if type(chunk) == "string" then
        local ok, _, lmsg = checker:check(chunk)
        if not ok then return nil, lmsg end
      end
      return chunk, err
    end, nil
  end
  if type(raw) == "table" and raw.source then
    return raw:source(), raw.size
  end
  error("smtp: 'message' must be a string, a file, a function or a message object", 4)
end

local function bare_list(field, v)
  local list, err = address.normalize(v)
  if not list then return nil, field .. ": " .. err end
  local out = {}
  for _, m in ipairs(list) do out[#out + 1] = m.address end
  return out
end

-- The envelope for a raw message: envelope = { from, to } or from/to/cc/bcc.
local function raw_envelope(spec)
  local env = spec.envelope
  -- The usual case as given: never changed afterwards, so no copy.
  if env and type(env.from) == "string" and env.from ~= "<>" and type(env.to) == "table" then
    return env
  end
  env = env or {}
  local from = env.from
  if from == nil and (spec.from == "" or spec.from == "<>") then
    from = ""
  end
  -- "<>" is how the null sender (bounces, RFC 5321 4.5.5) is usually written.
  if from == "<>" then from = "" end
  if from == nil then
    local list, err = bare_list("from", spec.from)
    if not list then return errors.fail("argument", err) end
    from = list[1]
  end
  if type(from) ~= "string" then
    return errors.fail("argument", "a sender is required (from or envelope.from)")
  end
  local to = env.to
  if to == nil then
    to = {}
    for _, field in ipairs({ "to", "cc", "bcc" }) do
      local list, err = bare_list(field, spec[field])
      if not list then return errors.fail("argument", err) end
      for _, a in ipairs(list) do to[#to + 1] = a end
    end
  elseif type(to) == "string" then
    to = { to }
  end
  return { from = from, to = to }
end

-- How much of a streamed message is read ahead to find its header section.
local HEAD_PEEK = 65536

-- Reads a streamed message's header section ahead (at most HEAD_PEEK
-- octets) so that MAIL can declare SMTPUTF8 when the headers need it.
-- Returns a source that replays what was read, and whether the header
-- section has 8-bit octets.
local function peek_headers(src)
  local buf, text, got = {}, "", 0
  local ended, failure
  while got < HEAD_PEEK do
    local chunk, err = src()
    if chunk == nil then
      ended, failure = true, err
      break
    end
    buf[#buf + 1] = chunk
    got = got + #chunk
    text = text .. chunk
    if text:find("\n\r?\n") or text:find("^\r?\n") then break end
  end
  local head = text:match("^(.-\n)\r?\n") or text
  local i = 0
  return function()
    i = i + 1
    if buf[i] then return buf[i] end
    if ended then return nil, failure end
    return src()
  end, head:find("[\128-\255]") ~= nil
end

-- A fresh source over the same message each time it is called, for
-- reading it once to sign and once more to send (a file goes back to
-- where it was: call it once more, ignoring the source, before sending);
-- nil for a function source, which can be read only once.
local function rereader(raw)
  if type(raw) == "string" then
    return function()
      local done = false
      return function()
        if done then return nil end
        done = true
        return raw
      end
    end
  end
  if io.type(raw) == "file" then
    local start = raw:seek()
    return start and function()
      raw:seek("set", start)
      return function() return raw:read(READ_BLOCK) end
    end
  end
  if type(raw) == "table" and raw.source then
    return function() return raw:source() end
  end
  return nil
end

-- The DKIM-Signature fields of a message ("" when it is not signed).
local function signature(opt, fresh)
  if not opt then return "" end
  local signers, serr = dkim.signers(opt)
  if not signers then return errors.fail("argument", "dkim: " .. serr) end
  if not fresh then
    return errors.fail("argument", "dkim: a function source can be read only once;" ..
      " give a string, a file or a message object to sign")
  end
  local fields, err, info = dkim.sign(signers, fresh())
  fresh()   -- a file is back where the message starts
  return fields, err, info
end

-- The job with its DKIM-Signature fields sent first (SIZE counts them).
local function signed(job, fields)
  if fields ~= "" then
    job.source = dkim.prepend(fields, job.source)
    job.size = job.size and job.size + #fields
  end
  return job
end

-- Prepares what one message needs: envelope, source, size, message_id.
-- session_dkim: the session's dkim option, for messages without their own.
function M.prepare(spec, session_dkim)
  local dsn, derr = ext.check_dsn(spec.dsn)
  if derr then return errors.fail("argument", derr) end
  if spec.message == nil and spec.envelope ~= nil then
    -- What `message = io.open(path)` gives when the open failed.
    return errors.fail("argument", "message is nil (an envelope was given without a message;" ..
      " did io.open fail?)")
  end
  local dkim_opt = spec.dkim
  if dkim_opt == nil then dkim_opt = session_dkim end
  if spec.message ~= nil then
    if spec.unsubscribe ~= nil then
      return errors.fail("argument", "unsubscribe is for composed messages: a raw message has its own headers")
    end
    local env, err, info = raw_envelope(spec)
    if not env then return nil, err, info end
    local raw = spec.message
    local fields, serr, sinfo = "", nil, nil
    if dkim_opt then fields, serr, sinfo = signature(dkim_opt, rereader(raw)) end
    if not fields then return nil, serr, sinfo end
    local source, size, eightbit, head8 = raw_source(raw)
    if not source then return nil, size, eightbit end
    local job = { envelope = env, source = source, size = size, dsn = dsn }
    if type(raw) == "string" then
      -- Known content: say exactly what it needs.
      job.eightbit, job.utf8_headers = eightbit, head8
    elseif type(raw) == "function" or io.type(raw) == "file" then
      job.source, job.utf8_headers = peek_headers(source)
    elseif type(raw) == "table" and getmetatable(raw) == message.Message then
      job.eightbit, job.utf8_headers = false, raw.utf8_headers
    end
    return signed(job, fields)
  end
  local msg, err, info = message.new(spec)
  if not msg then return nil, err, info end
  local fields, serr, sinfo = signature(dkim_opt, function() return msg:source() end)
  if not fields then return nil, serr, sinfo end
  return signed({ envelope = msg.envelope, source = msg:source(), size = msg.size,
                  message_id = msg.message_id, dsn = dsn, eightbit = false,
                  utf8_headers = msg.utf8_headers }, fields)
end

return M
