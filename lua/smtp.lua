-- lua-smtp: mail submission for Lua. The facade: it checks every call's
-- options against smtp.options (misuse raises here, at the caller's line,
-- before any connection) and hands the work to the session.
--   smtp.send{...}     build a message (or take a raw one) and submit it
--   smtp.connect{...}  a session for many messages
--   smtp.message{...}  build a message without sending it
local core = require "smtp.core"
local errors = require "smtp.errors"
local options = require "smtp.options"
local message = require "smtp.message"
local session = require "smtp.session"
local prepare = require("smtp.job").prepare
local report = require "smtp.report"

local M = { _VERSION = "lua-smtp " .. core.version }
M.error_kinds = errors.kinds

function M.connect(opts)
  options.check(opts, "connect", 2)
  return session.connect(opts)
end

-- A failure before any connection still reports what the options say.
local function before(opts, t0, ok, err, info)
  if type(info) == "table" and info.session == nil then
    info.session = report.snapshot(session.report_before(opts, t0))
  end
  return ok, err, info
end

function M.send(opts)
  options.check(opts, "send", 2)
  local t0 = core.now()
  local job, err, info = prepare(opts)
  if not job then return before(opts, t0, nil, err, info) end
  -- Bad addresses are the caller's error: say so before connecting.
  local env = job.envelope
  if type(env.from) == "string" and type(env.to) == "table" then
    local ok, verr, vinfo = session.check_envelope(env.from, env.to)
    if not ok then return before(opts, t0, nil, verr, vinfo) end
  end
  local s
  s, err, info = session.connect(opts)
  if not s then return nil, err, info end
  local res, e2, i2 = s:transaction(job)
  s:quit()
  -- The whole call, QUIT included.
  local rep = (res or i2 or {}).session
  if rep then rep.timings.total = core.now() - s._report.t0 end
  return res, e2, i2
end

function M.message(spec)
  options.check(spec, "compose", 2)
  return message.new(spec)
end

return M
