-- lua-smtp: mail submission for Lua.
--   smtp.send{...}     build a message (or take a raw one) and submit it
--   smtp.connect{...}  a session for many messages
--   smtp.message{...}  build a message without sending it
local core = require "smtp.core"
local errors = require "smtp.errors"
local transcript = require "smtp.transcript"
local message = require "smtp.message"
local session = require "smtp.session"
local prepare = require("smtp.job").prepare

local M = { _VERSION = "lua-smtp " .. core.version }
M.error_kinds = errors.kinds


local tls_modes = { auto = true, starttls = true, implicit = true, none = true }

local function check_type(opts, field, want, level)
  local v = opts[field]
  if v ~= nil and type(v) ~= want then
    error(string.format("smtp: option '%s' must be a %s, got %s", field, want, type(v)), level + 1)
  end
end

-- Type checks raise (misuse); value problems return the failure triple.
local function check_connection_options(opts, level)
  if type(opts) ~= "table" then error("smtp: expected a table of options", level + 1) end
  for _, f in ipairs({ "host", "helo", "tls", "protocol", "user", "password", "auth", "path",
                       "servername", "cafile", "capath", "cert", "key", "authzid" }) do
    check_type(opts, f, "string", level + 1)
  end
  for _, f in ipairs({ "timeout", "deadline" }) do check_type(opts, f, "number", level + 1) end
  if opts.port ~= nil and type(opts.port) ~= "number" and type(opts.port) ~= "string" then
    error("smtp: option 'port' must be a number or a string", level + 1)
  end
  if opts.tls ~= nil and not tls_modes[opts.tls] then
    error("smtp: option 'tls' must be auto, starttls, implicit or none", level + 1)
  end
  if opts.protocol ~= nil and opts.protocol ~= "smtp" and opts.protocol ~= "lmtp" then
    error("smtp: option 'protocol' must be smtp or lmtp", level + 1)
  end
end

local function tls_options(opts, host)
  return {
    servername = opts.servername or host,
    verify = opts.verify ~= false,
    cafile = opts.cafile, capath = opts.capath, cert = opts.cert, key = opts.key,
  }
end

-- After EHLO on a plaintext connection: STARTTLS as the mode asks.
--   "starttls": required, and nothing else is sent when it is not offered.
--   "auto": whenever offered; required as soon as credentials are given.
local function upgrade(s, opts, mode, tls_opts, creds)
  if s.tls or mode == "none" or mode == "implicit" then return true end
  local offered = s.capabilities.STARTTLS
  if offered then return s:starttls(tls_opts) end
  if mode == "starttls" or (creds and not opts.insecure_auth) then
    s:close()
    local why = mode == "starttls" and "tls = \"starttls\" requires it"
      or "credentials are only sent over TLS (set insecure_auth = true to allow plaintext)"
    return errors.fail("tls", "the server does not offer STARTTLS; " .. why,
      { stage = "starttls", temporary = false })
  end
  return true
end

local function credentials(opts)
  if opts.user == nil then
    if opts.password ~= nil or opts.token ~= nil then
      error("smtp: 'password' or 'token' given without 'user'", 4)
    end
    return nil
  end
  if opts.password == nil and opts.token == nil then
    error("smtp: 'user' given without 'password' or 'token'", 4)
  end
  return { user = opts.user, password = opts.password, token = opts.token,
           mech = opts.auth, authzid = opts.authzid }
end

local function connect(opts, level)
  check_connection_options(opts, level + 1)
  if opts.token ~= nil and type(opts.token) ~= "string" then
    error("smtp: option 'token' must be a string", level + 1)
  end
  local creds = credentials(opts)
  local trace = transcript.printer(opts.debug)
  -- The engine's rule for the EHLO name, checked before connecting.
  local helo = opts.helo or core.hostname() or "localhost"
  if helo == "" or #helo > 255 or helo:find("[%c ]") then
    return errors.fail("argument", "invalid host name for EHLO (control characters or spaces)")
  end
  local host = opts.host or "localhost"
  local mode = opts.tls or "auto"
  local port = opts.port or (mode == "implicit" and 465 or 25)
  if mode == "auto" and tonumber(port) == 465 then mode = "implicit" end
  local timeout = opts.timeout or 30
  local deadline = opts.deadline and (core.now() + opts.deadline) or nil
  local tls_opts = tls_options(opts, host)
  if trace then
    trace("connect", opts.path and ("to " .. opts.path)
      or string.format("to ('%s', %s)", host, tostring(port)))
  end

  local transport = opts.transport
  if not transport then
    local tmod = require("smtp.transport")
    local topts = { path = opts.path }
    if tmod.in_nginx() and not opts.path then
      -- Pooled connections are shared only by identical settings: same
      -- server, TLS checks, EHLO name and credentials (hashed).
      topts.pool = require("smtp.transport.cosocket").pool_name{
        host = host, port = port, tls = mode, servername = tls_opts.servername,
        verify = tls_opts.verify, cert = opts.cert, helo = helo, protocol = opts.protocol,
        user = opts.user, password = opts.password, token = opts.token,
      }
      topts.pool_size = opts.pool_size
    end
    local code, msg
    transport, code, msg = tmod.connect(host, port, timeout, deadline, topts)
    if not transport then
      local kind = code == "timeout" and "timeout" or "connect"
      return errors.fail(kind, msg, { stage = "connect", temporary = true })
    end
  end
  local session_opts = {
    helo = helo,
    lmtp = opts.protocol == "lmtp",
    trace = trace,
    limits = opts.limits,
    pipelining = opts.pipelining,
    insecure_auth = opts.insecure_auth,
    implicit_tls = mode == "implicit",
    tls = tls_opts,
    chunking = opts.chunking,
    window = opts.window,
  }
  local state = transport.pooled_state and transport:pooled_state()
  if state then
    local reused = session.resume(transport, session_opts, state)
    if reused then return reused end
  end
  local s, err, info = session.open(transport, session_opts)
  if not s then return nil, err, info end
  local ok
  ok, err, info = upgrade(s, opts, mode, tls_opts, creds)
  if not ok then return nil, err, info end
  if creds then
    ok, err, info = s:auth(creds)
    if not ok then
      s:quit()
      return nil, err, info
    end
  end
  return s
end

local Session = session.Session

-- s:send{ from=, to=, subject=, text=, ... } or { message = raw, ... }
function Session:send(spec)
  if type(spec) ~= "table" then error("smtp: send expects a table", 2) end
  local job, err, info = prepare(spec)
  if not job then return nil, err, info end
  return self:transaction(job)
end

-- s:sendmail(from, recipients, raw)
function Session:sendmail(from, rcpts, raw)
  if type(rcpts) == "string" then rcpts = { rcpts } end
  return self:send{ envelope = { from = from, to = rcpts }, message = raw }
end

-- Many messages through one session, pipelined (with CHUNKING, `window`
-- transactions in flight). One result per message, in order: the result
-- table, or on failure a table { error = "kind: text", info = info }.
function Session:send_many(list, opts)
  if type(list) ~= "table" then error("smtp: send_many expects an array", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("smtp: send_many options must be a table", 2) end
  local jobs = {}
  for i, spec in ipairs(list) do
    if type(spec) ~= "table" then error("smtp: send_many entry " .. i .. " is not a table", 2) end
    local job, err, info = prepare(spec)
    jobs[i] = job or { failed = { nil, err, info } }
  end
  local results = {}
  for i, r in ipairs(self:submit(jobs, opts)) do
    results[i] = r[1] or { error = r[2], info = r[3] }
  end
  return results
end

function M.connect(opts)
  return connect(opts, 2)
end

function M.send(opts)
  check_connection_options(opts, 2)
  local job, err, info = prepare(opts)
  if not job then return nil, err, info end
  -- Bad addresses are the caller's error: say so before connecting.
  local env = job.envelope
  if type(env.from) == "string" and type(env.to) == "table" then
    local ok, verr, vinfo = session.check_envelope(env.from, env.to)
    if not ok then return nil, verr, vinfo end
  end
  local s
  s, err, info = connect(opts, 2)
  if not s then return nil, err, info end
  local res, e2, i2 = s:transaction(job)
  s:quit()
  return res, e2, i2
end

function M.message(spec)
  if type(spec) ~= "table" then error("smtp.message expects a table", 2) end
  return message.new(spec)
end

return M
