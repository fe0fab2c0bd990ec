-- The driver loop: runs the C engine over any transport (the blocking C
-- socket, or an OpenResty cosocket), turns its events into results,
-- transcripts and failure triples. The loop lives in Lua so that a cosocket
-- may yield inside it.
local core = require "smtp.core"
local errors = require "smtp.errors"
local transcript = require "smtp.transcript"
local submit = require "smtp.submit"
local options = require "smtp.options"
local proxy = require "smtp.proxy"
local prepare = require("smtp.job").prepare
local sendreport = require "smtp.report"

local M = {}
local Session = {}
Session.__index = Session

local stage_of = errors.stage_of

-- ---- transcript -----------------------------------------------------------

function Session:_trace_commands(out)
  for line in out:gmatch("[^\n]*\n") do
    if self._auth_active and not line:match("^AUTH ") then
      line = "<redacted>\r\n"   -- an AUTH response line
    end
    self.trace("send", transcript.repr(transcript.redact_command(line)))
  end
end

function Session:_trace_reply(cmd, code, text)
  local trace = self.trace
  if self._redact_334 and code == 334 then text = "<redacted: the server's token error report>" end
  local lines, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    lines[n] = line
  end
  for i = 1, n do
    local sep = i < n and "-" or " "
    local l = lines[i]
    trace("reply", transcript.repr(code .. (l == "" and i == n and "" or sep .. l) .. "\r\n", "b"))
  end
  trace("reply", string.format("retcode (%d); Msg: %s", code, transcript.repr(text, "b")))
  if cmd == "greeting" then
    trace("connect", transcript.repr(text, "b"))
  elseif cmd == "data" or cmd == "dot" then
    trace("data", string.format("(%d, %s)", code, transcript.repr(text, "b")))
  end
end

-- ---- I/O ------------------------------------------------------------------

-- The transcript follows the output by position (octets ever queued,
-- eng:written()), not by write: whatever was queued since the last mark
-- is traced as command lines (as_commands), or was message data that its
-- writer traced. So tracing never decides when output is written, and no
-- line is traced twice.
function Session:_trace_output(as_commands)
  local eng = self.engine
  local written = eng:written()
  if as_commands and written > self._traced then
    local out = eng:output()
    local skip = self._traced - eng:sent()
    if skip > 0 then out = out:sub(skip + 1) end
    self:_trace_commands(out)
  end
  self._traced = written
end

-- Hands the engine's whole output to the transport.
-- quiet: the output is message data, traced by its writer instead.
function Session:_flush(quiet)
  local eng, tr = self.engine, self.transport
  if eng:pending() == 0 then return true end
  if self.trace then self:_trace_output(not quiet) end
  if tr.flush then
    return tr:flush(eng)
  end
  local out, i = eng:output(), 1
  while i <= #out do
    local n, code, msg = tr:send(out, i)
    if not n then
      -- A failed send may have written part of the span (a cosocket does
      -- not say how much): count it as maybe sent, so that an end of data
      -- in it is reported as "may have been accepted", never as not sent.
      eng:consumed(#out)
      return nil, code, msg
    end
    i = i + n
  end
  eng:consumed(#out)
  return true
end

-- The connection is gone or timed out in the middle of an operation.
function Session:_lost(code, msg)
  local stage = stage_of[self.engine:waiting_for()] or "connect"
  self:close()
  local kind = errors.kind_of(code)
  local text = msg or code
  local info = { stage = stage, temporary = kind ~= "tls" }
  if stage == "data_end" then
    text = text .. " after the end of data was sent: the server may or may not have" ..
      " accepted the message"
  elseif stage then
    text = text .. " (waiting for the reply to " .. stage .. ")"
  end
  return errors.fail(kind, text, info)
end

-- Reads from the transport into the engine: true, or nil, code, msg with
-- code "lost" (the connection failed: msg is the transport's code, and a
-- fourth value its text) or "protocol".
function Session:_read()
  local data, code, msg = self.transport:receive()
  if not data then
    if self.trace and self._partial ~= "" then
      -- What the server sent of a line it never ended belongs in the
      -- transcript too.
      self.trace("reply", transcript.repr(self._partial, "b") .. " (an incomplete line, then " ..
        tostring(code) .. ")")
      self._partial = ""
    end
    return nil, "lost", code, msg
  end
  return self:_input(data)
end

-- Feeds bytes the server sent to the engine (from the transport, or what a
-- proxy's handshake read past its reply): true, or nil, "protocol", msg.
function Session:_input(data)
  -- Kept (a reference, no copy) so that a reply the engine cannot parse
  -- still reaches the transcript.
  self._last_input = data
  if self.trace then
    local tail = data:match("\n([^\n]*)$")
    self._partial = tail or (self._partial .. data)
  end
  local fed, _, fmsg = self.engine:feed(data)
  if not fed then
    self:close()
    return nil, "protocol", fmsg
  end
  return true
end

-- debug = 2: the engine's state transitions, one "state" line each.
function Session:_trace_states()
  local lines = self.engine:trace()
  if lines then
    for line in lines:gmatch("[^\n]+") do self.trace("state", line) end
  end
end

-- ---- the loop -------------------------------------------------------------

-- The one driver loop, one turn at a time: hands the engine's output to the
-- transport, takes the engine's next event, reads only when the engine needs
-- input, and dispatches. Every operation (greeting and EHLO, STARTTLS, AUTH,
-- a transaction, a window of transactions) runs on it; the operation's
-- handlers h say what its events mean:
--   h.reply(cmd, index, code, enhanced, text, txn)  a reply (already traced)
--   h.body()          the engine wants message data (DATA after 354)
--   h.outcome(kind, txn, code, enhanced, text, fail, cmd)  a transaction's end
-- A handler may return a non-nil value to end the loop with it. Returns nil
-- to go on; "idle" (nothing in flight); "op", kind, cmd, code, enhanced,
-- text, fail, error (the operation itself ended: done, failed, starttls);
-- "lost", code, message (the connection failed); "bad", message (input the
-- engine cannot take). quiet: the output is message data, traced by its writer.
function Session:_step(h, quiet)
  local eng = self.engine
  local ok, fcode, fmsg = self:_flush(quiet)
  if not ok then return "lost", fcode, fmsg end
  local kind, cmd, index, code, enhanced, text, fail, perr, txn = eng:next()
  if self._states and kind ~= "reply" then self:_trace_states() end
  if kind == "need_input" then
    -- Commands the engine released while answering go out first (at the
    -- top of the next turn); only then is there anything to wait for.
    if eng:pending() == 0 then
      local read, why, rcode, rmsg = self:_read()
      if not read then
        if why == "lost" then return "lost", rcode, rmsg end
        return "bad", rcode
      end
    end
  elseif kind == "reply" then
    self._last_cmd = cmd
    if self.trace then self:_trace_reply(cmd, code, text) end
    if self._states then self:_trace_states() end
    if h.reply then return h.reply(cmd, index, code, enhanced, text, txn) end
  elseif kind == "challenge" then
    return self:_answer(text)
  elseif kind == "need_body" then
    return h.body()
  elseif txn and (kind == "done" or kind == "failed") then
    return h.outcome(kind, txn, code, enhanced, text, fail, cmd)
  elseif kind == "idle" then
    return "idle"
  else
    if cmd == "none" then cmd = self._last_cmd end
    return "op", kind, cmd, code, enhanced, text, fail, perr
  end
end

-- A 334 inside AUTH: the mechanism's answer, or "*" to cancel (RFC 4954 4:
-- the server's 501 then ends the exchange).
function Session:_answer(text)
  local resp, cerr = self._challenge(text)
  if not resp then
    self._auth_error = cerr
    resp = "*"
  end
  local ok, _, amsg = self.engine:auth_response(resp)
  if not ok then
    self:close()
    return "fail", errors.fail("auth", amsg, { stage = "auth" })
  end
end

local no_handlers = {}

-- Runs an operation without transactions to its end on the loop.
-- Returns "done"/"starttls", code, enhanced, text | "failed", fail, code,
-- enhanced, text, error, cmd | nil, err, info.
function Session:_run()
  while true do
    local r, a, b, c, d, e, f, g = self:_step(no_handlers)
    if r == "op" then
      if a == "failed" then return "failed", f, c, d, e, g, b end
      -- An operation can succeed on a session the server broke with bytes
      -- nobody asked for: keep the outcome, but no further command may go.
      if self.engine:dead() then self:close() end
      return a, c, d, e
    elseif r == "lost" then
      return self:_lost(a, b)
    elseif r == "bad" then
      return errors.fail("protocol", a, { stage = stage_of[self._last_cmd] })
    elseif r == "fail" then
      return a, b, c
    elseif r == "idle" then
      error("smtp: engine idle while an operation was expected")
    end
  end
end

-- Turns an engine failure into the failure triple.
function Session:_failure(fail, code, enhanced, text, perr, cmd, extra, summary)
  local info = extra or {}
  info.code, info.enhanced = code, enhanced
  info.stage = info.stage or stage_of[cmd]
  local msg = errors.fail_text[fail] or fail
  if summary then
    msg = summary
    info.message = errors.text(enhanced, text)
  elseif code then
    msg = msg .. ": " .. errors.describe(code, enhanced, text)
    info.message = errors.text(enhanced, text)
  elseif perr then
    msg = msg .. ": " .. perr
    if self.trace and self._last_input then
      self.trace("reply", transcript.repr(self._last_input, "b") .. " (" .. perr .. ")")
    end
  end
  if self.engine:dead() then self:close() end
  if fail == "closing" then info.temporary = true end
  return errors.fail(errors.fail_kind[fail] or "protocol", msg, info)
end

-- ---- operations -------------------------------------------------------------

-- Runs one engine operation that has no body and no per-command results.
function Session:_simple(start, ...)
  if self.closed then return errors.fail("closed", "session is closed") end
  local ok, code, msg = start(self.engine, ...)
  if not ok then
    return errors.fail(errors.kind_of(code), msg)
  end
  local r, a, b, c, d, e, f = self:_run()
  if r == "done" or r == "starttls" then return true, a, b, c end
  if r == "failed" then return self:_failure(a, b, c, d, e, f) end
  return r, a, b
end

function Session:hello(name)
  local ok, err, info, text = self:_simple(self.engine.hello, name, self.lmtp)
  if not ok then return nil, err, info end
  self._ehlo_text = text
  if self.closed then
    return errors.fail("protocol", "unexpected reply from server after the reply to EHLO",
      { stage = "hello" })
  end
  self.capabilities = self.engine:capabilities() or {}
  self.extended = self.engine:capabilities() ~= nil
  return true
end

function Session:noop()
  local ok, code, enhanced, text = self:_simple(self.engine.noop)
  if not ok then return nil, code, enhanced end
  return { code = code, enhanced = enhanced, message = errors.text(enhanced, text) }
end

function Session:rset()
  local ok, err, info = self:_simple(self.engine.rset)
  if not ok then return nil, err, info end
  return true
end

-- Ends the session politely; errors on the way out are not the caller's
-- concern once the messages are through, so quit always closes.
function Session:quit()
  if self.closed then return true end
  if self.engine:dead() then
    self:close()
    return true
  end
  self:_simple(self.engine.quit)
  self:close()
  return true
end

function Session:close()
  if not self.closed then
    self.closed = true
    self.engine:close()
    self.transport:close()
  end
  return true
end

Session.__gc = Session.close
Session.__close = Session.close

-- Upgrades the connection (RFC 3207): STARTTLS, the handshake with the
-- certificate checked as tls_opts says, then EHLO again, since what the
-- server said before the handshake cannot be trusted.
function Session:starttls(tls_opts)
  local ok, err, info = self:_simple(self.engine.starttls)
  if not ok then
    self:close()
    return nil, err, info
  end
  local tls_ok, code, msg = self:_handshake(tls_opts, "starttls")
  if not tls_ok then return nil, code, msg end
  self.engine:tls_done()
  return self:hello(self.helo)
end

-- The TLS handshake on the transport, for STARTTLS and implicit TLS.
-- stage: "starttls", or "tls" for implicit TLS (no STARTTLS was sent).
function Session:_handshake(tls_opts, stage)
  local trace = self.trace
  if trace then
    if tls_opts.verify then
      trace("tls", "handshake, verifying the certificate for " .. tostring(tls_opts.servername))
    else
      trace("tls", "handshake WITHOUT certificate verification (verify = false)")
    end
  end
  local t0 = core.now()
  local ok, code, msg = self.transport:starttls(tls_opts)
  if not ok then
    self:close()
    local kind = errors.kind_of(code)
    return errors.fail(kind, msg or code, { stage = stage, temporary = kind ~= "tls" })
  end
  self.tls = true
  sendreport.tls(self._report, self.transport, tls_opts.verify, core.now() - t0)
  if self.transport.tls_info then
    local version, cipher, resumed = self.transport:tls_info()
    -- resumed: an earlier session with this server (same name, same checks)
    -- was taken up again; the transport checked the name once more.
    self.tls_resumed = resumed == true
    if trace and version then
      trace("tls", tostring(version) .. " " .. tostring(cipher) .. (resumed and " (resumed session)" or ""))
    end
  end
  return true
end

local TOKEN_MECHS = { XOAUTH2 = true, OAUTHBEARER = true }

-- What a token mechanism's error report (a JSON object in the 334) says:
-- { status =, scope =, schemes = } (flat string fields only), or nil.
local function oauth_report(json)
  if type(json) ~= "string" or not json:find("^%s*{") then return nil end
  local out, any = {}, false
  for _, key in ipairs({ "status", "scope", "schemes" }) do
    local v = json:match('"' .. key .. '"%s*:%s*"([^"]*)"')
    if v then out[key], any = v, true end
  end
  return any and out or nil
end

-- A refused token that a fresh one may cure: RFC 7628's invalid_token,
-- Google's "401" for XOAUTH2, anything saying it expired.
local function token_rejected(report)
  local st = report and report.status or ""
  return st == "invalid_token" or st == "401" or st:lower():find("expired") ~= nil
end

-- The token a credential gives: the string, or what the function returns
-- (called with nil first, then with the server's report on a refresh).
local function resolve_token(token, report)
  if type(token) ~= "function" then return token end
  local ok, t = pcall(token, report)
  if not ok then return nil, "the token function failed: " .. tostring(t) end
  if type(t) ~= "string" or t == "" then
    return nil, "the token function returned " .. (type(t) == "string" and "an empty string" or "a " .. type(t))
  end
  return t
end

-- AUTH (RFC 4954). creds: { user, password | token, mech, authzid }; token
-- may be a function returning a fresh token: it is called before AUTH, and
-- once more when the server says the token is invalid or expired; the
-- second AUTH goes over the same connection when the server left it open,
-- else smtp.connect opens a new one (self._fresh_token carries it there).
function Session:auth(creds)
  local token, terr = resolve_token(creds.token)
  if creds.token ~= nil and not token then return errors.fail("argument", terr, { stage = "auth" }) end
  local ok, err, info = self:_auth_once(creds, token or creds.password)
  if ok or type(creds.token) ~= "function" or not (info and token_rejected(info.oauth)) then
    return ok, err, info
  end
  local fresh, ferr = resolve_token(creds.token, info.oauth)
  if not fresh then return errors.fail("argument", ferr, { stage = "auth" }) end
  if self.closed then
    self._fresh_token = fresh
    return nil, err, info
  end
  if self.trace then self.trace("info", "the token was refused; AUTH again with a fresh one") end
  ok, err, info = self:_auth_once(creds, fresh)
  if not ok and self.closed and info.kind == "closed" then
    -- The server had closed the connection after its refusal: the fresh
    -- token never reached it.
    self._fresh_token = fresh
  end
  return ok, err, info
end

-- One AUTH exchange with this secret (a password or a token).
function Session:_auth_once(creds, secret)
  local offered = self.capabilities and self.capabilities.AUTH
  if not offered then
    return errors.fail("auth", "the server does not offer AUTH", { stage = "auth", temporary = false })
  end
  if offered == true then offered = "" end
  local mech = creds.mech and creds.mech:upper() or core.sasl_choose(offered, creds.token ~= nil)
  if not mech then
    return errors.fail("auth", "no authentication mechanism in common (the server offers: " ..
      offered .. ")", { stage = "auth", temporary = false })
  end
  if creds.mech and not (" " .. offered:upper() .. " "):find(" " .. mech .. " ", 1, true) then
    return errors.fail("auth", mech .. " is not offered (the server offers: " .. offered .. ")",
      { stage = "auth", temporary = false })
  end
  local sasl, initial, smsg = core.sasl(mech, creds.authzid, creds.user, secret)
  if not sasl then return errors.fail("argument", smsg, { stage = "auth" }) end
  local ok, code, msg = self.engine:auth(mech, initial ~= "" and initial or nil)
  if not ok then
    if code == "insecure" then
      return errors.fail("auth", "refusing to send credentials over an unencrypted connection" ..
        " (use TLS, or set insecure_auth = true)", { stage = "auth", temporary = false })
    end
    return errors.fail("argument", msg, { stage = "auth" })
  end
  -- A token mechanism's 334 is an error report: kept for info.oauth, and
  -- kept out of the transcript.
  local report
  self._auth_active, self._auth_error, self._redact_334 = true, nil, TOKEN_MECHS[mech]
  -- step gives nil, code, message: the message is what the caller reads.
  -- A SCRAM server-final ("v=...") that fails is the server not proving it
  -- knows the password, as in sasl:finish.
  self._challenge = function(text)
    if TOKEN_MECHS[mech] then report = oauth_report(core.b64decode(text)) end
    local resp, _, serr = sasl:step(text)
    if resp then return resp end
    local dec = mech == "SCRAM-SHA-256" and core.b64decode(text)
    local rounds = dec and tonumber(dec:match(",i=(%d+)"))
    if dec and dec:sub(1, 2) == "v=" then
      serr = "the server did not prove that it knows the password (SCRAM server signature wrong)"
    elseif rounds and rounds < 4096 then
      serr = "the server asks for " .. rounds .. " SCRAM iterations; at least 4096 are required" ..
        " (RFC 7677), fewer make the password cheap to guess from the exchange"
    end
    return nil, serr
  end
  local r, a, b, c, d, e, f = self:_run()
  self._auth_active, self._challenge, self._redact_334 = false, nil, nil
  if r == "done" then
    local fin, _, fmsg = sasl:finish(c or "")
    if not fin then
      self:close()
      return errors.fail("auth", fmsg, { stage = "auth", temporary = false })
    end
    self.authenticated = mech
    return true
  end
  if r == "failed" then
    local extra = { stage = "auth", oauth = report }
    if self._auth_error then
      return self:_failure(a, b, c, d, e, f, extra, "authentication failed: " .. self._auth_error)
    end
    return self:_failure(a, b, c, d, e, f, extra)
  end
  return r, a, b
end

-- ---- a transaction -----------------------------------------------------------

-- The value checks on an envelope (from: string, to: table), so that
-- smtp.send can make them before it connects: true or the failure triple.
M.check_envelope = submit.check_envelope

-- One transaction: job = { envelope = { from, to }, source = fn, size = n,
-- message_id, dsn, eightbit, utf8_headers } (see smtp.submit).
function Session:transaction(job)
  if self.closed then
    return sendreport.on_failure(self._report, errors.fail("closed", "session is closed", { temporary = true }))
  end
  local r = self:_submit({ job }, { window = 1 })
  return r[1][1], r[1][2], r[1][3]
end

-- Many transactions, pipelined; one { res } or { nil, err, info } each.
function Session:submit(jobs, opts)
  if self.closed then
    local out = {}
    for i = 1, #jobs do
      out[i] = { sendreport.on_failure(self._report, errors.fail("closed", "session is closed", { temporary = true })) }
    end
    return out
  end
  return self:_submit(jobs, opts)
end

-- Did the first use of a connection taken from the pool find it stale?
-- True only when nothing of the transactions left: no reply to any MAIL
-- (a MAIL answered means the connection was alive), no octet of any body
-- handed to the transport (the end of data, above all, never written), and
-- the connection was lost (closed or reset) or answered the first MAIL
-- with 421 (a server closing an idle session). A timeout is not staleness.
local function found_stale(results, wrote_body)
  if wrote_body then return false end
  local lost = false
  for _, r in ipairs(results) do
    if r[1] ~= nil then return false end
    local info = r[3] or {}
    if info.stage ~= nil and info.stage ~= "mail" then return false end
    if info.code and info.code ~= 421 then return false end
    if info.stage == "mail" and info.temporary and (info.kind == "closed" or info.code == 421) then
      lost = true
    end
  end
  return lost
end

-- Runs the transactions; on a connection from the pool that turns out to be
-- stale at its first use (see found_stale), once more on a fresh connection
-- made with the same options. The results then say retried_stale = true
-- (the result table, or the failure's info), and so does the session; when
-- no fresh connection could be made, the first failures stand (not sent),
-- with retried_stale = true and retry_error = why not.
function Session:_submit(jobs, opts)
  local first_use = self.reused and not self._used
  self._used = true
  self._wrote_body = false
  local results = submit.submit(self, jobs, opts)
  if not (first_use and self._reconnect and found_stale(results, self._wrote_body)) then
    return self:_reported(results)
  end
  if self.trace then
    self.trace("info", "the pooled connection was stale; once more on a fresh connection")
  end
  self:close()
  local fresh, ferr = self._reconnect()
  if not fresh then
    -- The first failure (not sent) stands, saying that a retry failed too.
    for _, r in ipairs(results) do
      if type(r[3]) == "table" then r[3].retried_stale, r[3].retry_error = true, ferr end
    end
    self.retried_stale = true
    return self:_reported(results)
  end
  -- The fresh session takes this one's place: the caller's object goes on.
  for k in pairs(self) do self[k] = nil end
  for k, v in pairs(fresh) do self[k] = v end
  fresh.closed = true   -- its transport is this session's now; its __gc must not close it
  self.retried_stale = true
  self._used = true
  results = submit.submit(self, jobs, opts)
  for _, r in ipairs(results) do
    local t = r[1] or r[3]
    if type(t) == "table" then t.retried_stale = true end
  end
  return self:_reported(results)
end

-- Gives each result (or failure's info) its report: the session's, with
-- its own transaction's time (submit's results.started and .ended).
function Session:_reported(results)
  local rep = self._report
  local now = core.now()
  local started, ended = results.started or {}, results.ended or {}
  for i, r in ipairs(results) do
    local t = r[1] or r[3]
    if type(t) == "table" and t.session == nil then
      local s0, e0 = started[i], ended[i] or now
      t.session = sendreport.snapshot(rep, self, s0 and e0 - s0, e0)
    end
  end
  return results
end

-- ---- construction ------------------------------------------------------------

-- Wraps a connected transport, reads the greeting and says hello.
-- opts (built by M.connect): helo, lmtp, trace (a printer from the debug
-- option, or nil), states (trace the engine's transitions: debug = 2),
-- limits, pipelining, insecure_auth, implicit_tls and tls (the TLS options
-- for its handshake), chunking, window, dkim; pending: what the server sent
-- that was read with a proxy's reply (smtp.proxy), fed before any read.
function M.open(transport, opts)
  local self = setmetatable({
    engine = core.engine(opts.limits),
    transport = transport,
    trace = opts.trace,
    lmtp = opts.lmtp or false,
    capabilities = {},
    closed = false,
    _report = opts.report or sendreport.new(nil, nil, nil, opts.lmtp and "lmtp"),
    _traced = 0, _partial = "",
  }, Session)
  self._report.session = self
  if opts.pipelining == false then self.engine:set_pipelining(false) end
  if opts.states and self.trace then self.engine:set_trace(true); self._states = true end
  self.chunking, self.window, self.dkim = opts.chunking, opts.window, opts.dkim
  if opts.insecure_auth then self.engine:set_insecure_auth(true) end
  self.helo = opts.helo
  if opts.pending and opts.pending ~= "" then
    -- The server's first bytes, read with a proxy's reply. Under implicit
    -- TLS the server waits for the client's hello: bytes before it are not
    -- the server's TLS.
    if opts.implicit_tls then
      self:close()
      return errors.fail("protocol", "bytes arrived through the proxy before the TLS handshake",
        { stage = "tls" })
    end
    local ok, _, msg = self:_input(opts.pending)
    if not ok then return errors.fail("protocol", msg, { stage = "greeting" }) end
  end
  if opts.implicit_tls then
    local ok, err, info = self:_handshake(opts.tls, "tls")
    if not ok then return nil, err, info end
    self.engine:set_secure(true)
  end
  local ok, err, info = self:hello(opts.helo)
  if not ok then
    self:close()
    return nil, err, info
  end
  return self
end

-- Returns a healthy session to the transport's connection pool (OpenResty
-- cosockets) instead of closing it: RSET first, so the next user starts
-- clean. Transports without a pool just QUIT. timeout: seconds idle.
function Session:setkeepalive(timeout, size)
  if self.closed or self.engine:dead() then
    return errors.fail("closed", "session is closed", { temporary = true })
  end
  if not self.transport.setkeepalive then
    self:quit()
    return true
  end
  local ok, err, info = self:rset()
  if not ok then
    self:close()
    return nil, err, info
  end
  local tr = self._report and self._report.tls_report or {}
  local state = M.encode_state{ ehlo = self._ehlo_text or "", lmtp = self.lmtp, tls = self.tls,
                                authenticated = self.authenticated, tls_version = tr.version,
                                tls_cipher = tr.cipher, verified = tr.verified }
  self.closed = true
  self.engine:close()
  local kok, code, msg = self.transport:setkeepalive(timeout, size, state)
  if not kok then return errors.fail("closed", msg or code, { temporary = true }) end
  return true
end

-- What a pooled connection must remember to be resumed, as the string the
-- transport keeps with that connection: "lua-smtp 2", the protocol, TLS,
-- the mechanism it authenticated with ("-": none), for the report the TLS
-- version, cipher ("-": unknown) and whether the certificate was verified
-- (1 or 0), then the EHLO reply.
local function word(v)
  if type(v) ~= "string" or v == "" or v:find("[%s%c]") then return "-" end
  return v
end

function M.encode_state(st)
  local auth = st.authenticated
  if type(auth) ~= "string" or auth == "" or auth:find("[%s%c]") then auth = auth and "yes" or "-" end
  return string.format("lua-smtp 2 %s %s %s %s %s %d\n%s", st.lmtp and "lmtp" or "smtp",
    st.tls and "tls" or "plain", auth, word(st.tls_version), word(st.tls_cipher),
    st.verified and 1 or 0, st.ehlo or "")
end

-- The table encode_state was given, or nil for anything else.
function M.decode_state(s)
  if type(s) ~= "string" then return nil end
  local proto, tls, auth, version, cipher, verified, ehlo =
    s:match("^lua%-smtp 2 (%a+) (%a+) (%S+) (%S+) (%S+) ([01])\n(.*)$")
  if not proto then return nil end
  local authenticated = false
  if auth == "yes" then authenticated = true elseif auth ~= "-" then authenticated = auth end
  return { lmtp = proto == "lmtp", tls = tls == "tls", authenticated = authenticated, ehlo = ehlo,
           tls_version = version ~= "-" and version or nil, tls_cipher = cipher ~= "-" and cipher or nil,
           verified = verified == "1" }
end

-- A session on a pooled connection, from the state setkeepalive left:
-- no greeting, no EHLO, no STARTTLS, no AUTH again.
function M.resume(transport, opts, state)
  local self = setmetatable({
    engine = core.engine(opts.limits),
    transport = transport,
    trace = opts.trace,
    lmtp = state.lmtp or false,
    closed = false,
    tls = state.tls,
    authenticated = state.authenticated,
    helo = opts.helo,
    reused = true,
    _report = opts.report or sendreport.new(nil, nil, nil, state.lmtp and "lmtp"),
    _traced = 0, _partial = "",
  }, Session)
  self._report.session = self
  sendreport.tls_from_state(self._report, state)
  if opts.pipelining == false then self.engine:set_pipelining(false) end
  if opts.states and self.trace then self.engine:set_trace(true); self._states = true end
  self.chunking, self.window, self.dkim = opts.chunking, opts.window, opts.dkim
  local ok, _, msg = self.engine:restore(state.ehlo, self.lmtp, state.tls)
  if not ok then
    self:close()
    return errors.fail("protocol", msg)
  end
  self._ehlo_text = state.ehlo
  self.capabilities = self.engine:capabilities() or {}
  self.extended = true
  if self.trace then self.trace("info", "reusing a pooled connection") end
  return self
end

-- ---- messages -----------------------------------------------------------------

-- s:send{ from=, to=, subject=, text=, ... } or { message = raw, ... }
function Session:send(spec)
  options.check(spec, "message", 2)
  local job, err, info = prepare(spec, self.dkim)
  if not job then return sendreport.on_failure(self._report, nil, err, info) end
  return self:transaction(job)
end

-- s:sendmail(from, recipients, raw)
function Session:sendmail(from, rcpts, raw)
  if type(rcpts) == "string" then rcpts = { rcpts } end
  local spec = { envelope = { from = from, to = rcpts }, message = raw }
  options.check(spec, "message", 2)
  local job, err, info = prepare(spec, self.dkim)
  if not job then return sendreport.on_failure(self._report, nil, err, info) end
  return self:transaction(job)
end

-- Many messages through one session, pipelined (with CHUNKING, `window`
-- transactions in flight). One result per message, in order: the result
-- table, or on failure a table { error = "kind: text", info = info }.
function Session:send_many(list, opts)
  if type(list) ~= "table" then error("smtp: send_many expects a list of messages", 2) end
  if options.has_holes(list) then error("smtp: send_many's list has a hole (a nil in the list)", 2) end
  if opts ~= nil then options.check(opts, "batch", 2, "send_many's options") end
  local jobs = {}
  for i, spec in ipairs(list) do
    options.check(spec, "message", 2, "send_many entry " .. i)
  end
  for i, spec in ipairs(list) do
    local job, err, info = prepare(spec, self.dkim)
    jobs[i] = job or { failed = { nil, err, info } }
  end
  local results = {}
  for i, r in ipairs(self:submit(jobs, opts)) do
    results[i] = r[1] or { error = r[2], info = r[3] }
  end
  return results
end

-- ---- connecting ---------------------------------------------------------------

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

-- The credentials, or false when none are given. A user without a secret
-- (say, a password from an unset environment variable) is a value problem,
-- not a type error: it returns the failure triple.
local function credentials(opts)
  if opts.user == nil then
    if opts.password ~= nil or opts.token ~= nil then
      return errors.fail("argument", "'password' or 'token' given without 'user'")
    end
    return false
  end
  if opts.password == nil and opts.token == nil then
    return errors.fail("argument", "'user' given without 'password' or 'token' (is the variable" ..
      " that should hold the password set?)")
  end
  return { user = opts.user, password = opts.password, token = opts.token,
           mech = opts.auth, authzid = opts.authzid }
end

-- This host's name for EHLO, asked of the system once a minute at most
-- rather than for every connection.
local host_name, host_name_at
local function hostname()
  local now = core.now()
  if not host_name or now - host_name_at > 60 then
    host_name, host_name_at = core.hostname() or "localhost", now
  end
  return host_name
end

-- Connects, says hello, upgrades to TLS and authenticates as opts (checked
-- against smtp.options) say: the session, or the failure triple.
-- fresh: never a pooled connection; deadline: the absolute deadline of a
-- call this connection is part of (a retry on a fresh connection).
local function connect(opts, fresh, deadline, rep)
  local creds, cerr, cinfo = credentials(opts)
  if creds == nil then return nil, cerr, cinfo end
  local trace = transcript.printer(opts.debug)
  -- The engine's rule for the EHLO name, checked before connecting.
  local helo = opts.helo or hostname()
  if helo == "" or #helo > 255 or helo:find("[%c ]") then
    return errors.fail("argument", "invalid host name for EHLO (control characters or spaces)")
  end
  local host = opts.host or "localhost"
  local mode = opts.tls or "auto"
  local port = opts.port or (mode == "implicit" and 465 or 25)
  if mode == "auto" and tonumber(port) == 465 then mode = "implicit" end
  local timeout = opts.timeout or 30
  deadline = deadline or (opts.deadline and (core.now() + opts.deadline)) or nil
  local tls_opts = tls_options(opts, host)
  -- through a proxy the socket's peer is the proxy: TLS sessions are kept
  -- per server behind it
  if opts.proxy then tls_opts.server = host .. ":" .. tostring(port) end
  if trace then
    trace("connect", opts.path and ("to " .. opts.path)
      or string.format("to ('%s', %s)", host, tostring(port)))
  end

  -- opts.transport: a connected transport object, or the name of one to
  -- make ("socket", "copas", "cqueues").
  local given = type(opts.transport) ~= "string" and opts.transport or nil
  local transport, pending = given, nil
  if opts.proxy and (opts.path or given) then
    return errors.fail("argument", "'proxy' cannot be used with '" .. (opts.path and "path" or "transport") .. "'")
  end
  if not transport then
    local tmod = require("smtp.transport")
    local topts = { path = opts.path, kind = opts.transport }
    if tmod.in_nginx() and not opts.path and opts.transport == nil then
      -- Pooled connections are shared only by identical settings: every
      -- option that is part of a session's identity (smtp.options).
      topts.pool = require("smtp.transport.cosocket").pool_name(opts,
        { host = host, port = port, tls = mode, servername = tls_opts.servername, helo = helo })
      topts.pool_size = opts.pool_size
      topts.fresh = fresh
    end
    local code, msg
    if opts.proxy then
      local dial = function(phost, pport) return tmod.connect(phost, pport, timeout, deadline, topts) end
      transport, pending, msg = proxy.connect(proxy.parse(opts.proxy), host, port, timeout, deadline,
        dial, trace, tmod.in_nginx())
      if not transport then return nil, pending, msg end
      sendreport.connected(rep, transport, true)
    else
      transport, code, msg = tmod.connect(host, port, timeout, deadline, topts)
      sendreport.connected(rep, transport)
      if not transport then
        local kind = code == "timeout" and "timeout" or "connect"
        return errors.fail(kind, msg, { stage = "connect", temporary = true })
      end
    end
  end
  local session_opts = {
    helo = helo,
    lmtp = opts.protocol == "lmtp",
    trace = trace,
    states = opts.debug == 2, -- the engine's transitions in the transcript
    limits = opts.limits,
    pipelining = opts.pipelining,
    insecure_auth = opts.insecure_auth,
    implicit_tls = mode == "implicit",
    tls = tls_opts,
    chunking = opts.chunking,
    window = opts.window,
    dkim = opts.dkim,
    pending = pending,
    report = rep,
  }
  if given then sendreport.connected(rep, transport) end
  if transport.getreusedtimes and transport:getreusedtimes() > 0 then
    -- From the pool: resumed from the state kept with this very connection.
    -- Without one (pooled by other code, or its state was lost) nobody
    -- knows where its dialogue stands: it is closed, and a new one made.
    local state = M.decode_state(transport.pooled_state and transport:pooled_state())
    local reused = state and M.resume(transport, session_opts, state)
    if reused then
      if not given then
        reused._reconnect = function() return M.connect(opts, true, deadline) end
      end
      return reused
    end
    transport:close()
    if given or fresh then
      return errors.fail("connect", "a pooled connection without the state to resume it",
        { stage = "connect", temporary = true })
    end
    return M.connect(opts, true, deadline)
  end
  local s, err, info = M.open(transport, session_opts)
  if not s then return nil, err, info end
  local ok
  ok, err, info = upgrade(s, opts, mode, tls_opts, creds)
  if not ok then return nil, err, info end
  if creds then
    local ta = core.now()
    ok, err, info = s:auth(creds)
    sendreport.auth(rep, core.now() - ta)
    if not ok then
      s:quit()
      if s._fresh_token and not opts._refreshed and not given then
        -- The server closed the connection on the refused token: once more
        -- on a new one, with the fresh token.
        local again = setmetatable({ token = s._fresh_token, _refreshed = true }, { __index = opts })
        return M.connect(again)
      end
      return nil, err, info
    end
  end
  return s
end

-- The port a connection with these options goes to.
function M.port_of(opts)
  local mode = opts.tls or "auto"
  return opts.port or (mode == "implicit" and 465 or 25)
end

-- A report for a call that has not connected (yet): what the options say.
function M.report_before(opts, t0)
  return sendreport.new(opts.host or "localhost", M.port_of(opts), opts.path, opts.protocol, t0)
end

-- Connects, says hello, upgrades to TLS and authenticates as opts say:
-- the session, or the failure triple, whose info carries the report of
-- what was known when it failed (info.session).
function M.connect(opts, fresh, deadline)
  local rep = M.report_before(opts)
  return sendreport.on_failure(rep, connect(opts, fresh, deadline, rep))
end

M.Session = Session
return M
