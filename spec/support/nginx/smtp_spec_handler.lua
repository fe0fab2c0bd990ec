-- Request handlers for spec/resty_spec.lua, loaded by the nginx that
-- spec/support/nginx.lua starts (see nginx.conf.in). Runs inside nginx:
-- ngx.* and cosockets only, never LuaSocket.
local M = {}

local function arg(name, default)
  local v = ngx.var["arg_" .. name]
  if v == nil or v == "" then return default end
  return ngx.unescape_uri(v)
end

local function num(name, default)
  return tonumber(arg(name)) or default
end

-- One message through the public API: the transport is whatever
-- smtp.transport picks (it must be the cosocket one in here).
-- Args: host, port, from, to, subject, text, timeout, deadline, tls,
-- servername, verify (0: off), cafile, cert, key, proxy; blocking=1 forces the
-- blocking C socket (the control case: it stalls the worker).
function M.send()
  local smtp = require "smtp"
  local now = require("smtp.core").now
  local t0 = now()
  local host, port = arg("host", "127.0.0.1"), num("port", 25)
  local transport
  if arg("blocking") == "1" then
    transport = assert(require("smtp.transport.socket").connect(host, port, 30))
  end
  local res, err, info = smtp.send{
    host = host,
    port = port,
    transport = transport,
    from = arg("from", "sender@example.com"),
    to = arg("to", "rcpt@example.com"),
    subject = arg("subject", "sent from nginx"),
    text = arg("text", "Hello from a cosocket.\n"),
    timeout = num("timeout"),
    deadline = num("deadline"),
    tls = arg("tls"),
    servername = arg("servername"),
    verify = arg("verify") ~= "0",
    cafile = arg("cafile"),
    cert = arg("cert"),
    key = arg("key"),
    proxy = arg("proxy"),
  }
  local elapsed = now() - t0
  if res then
    ngx.say("ok ", res.code, " ", tostring(res.message))
  else
    ngx.say("error ", tostring(err))
    ngx.say("kind=", tostring(info and info.kind), " stage=", tostring(info and info.stage))
  end
  if arg("report") == "1" then
    -- the send report, for the report spec: what the cosocket transport knows
    local r = (res or info or {}).session or {}
    local t = r.tls or {}
    local p = t.peer or {}
    ngx.say("report address=", tostring(r.address), " port=", tostring(r.port),
      " protocol=", tostring(r.protocol), " version=", tostring(t.version),
      " cipher=", tostring(t.cipher ~= nil), " verified=", tostring(t.verified),
      " subject=", tostring(p.subject), " issuer=", tostring(p.issuer),
      " san=", table.concat(p.san or {}, ","), " reused=", tostring(r.reused),
      " connect=", tostring(type((r.timings or {}).connect) == "number"),
      " tls=", tostring(type((r.timings or {}).tls) == "number"))
  end
  ngx.say("transport=", transport and "socket" or
    (require("smtp.transport").in_nginx() and "cosocket" or "socket"))
  ngx.say(string.format("elapsed=%.3f", elapsed))
end

-- Two sessions through smtp.connect: the first goes back to the pool with
-- s:setkeepalive (RSET first), the second comes from it and sends at once,
-- with no greeting, EHLO, STARTTLS or AUTH. Arg proxy: through that proxy.
function M.session_pool()
  local smtp = require "smtp"
  local out = {}
  for i = 1, 2 do
    local s, err = smtp.connect{ host = "127.0.0.1", port = num("port", 25), tls = "none",
                                 helo = "pool.test", timeout = 5, proxy = arg("proxy") }
    if not s then
      ngx.say("connect ", i, " failed: ", err)
      return
    end
    local res, serr = s:send{ from = "a@example.com", to = "b@example.org",
                              subject = "pooled " .. i, text = "x\n" }
    out[#out + 1] = string.format("send%d=%s reused%d=%s", i, res and res.code or serr, i,
      tostring(s.reused == true))
    if arg("report") == "1" then
      out[#out + 1] = string.format("report%d=%s", i, tostring(res and res.session.reused))
    end
    local ok, kerr = s:setkeepalive(10, 4)
    out[#out + 1] = "keepalive" .. i .. "=" .. tostring(ok or kerr)
  end
  ngx.say(table.concat(out, " "))
end

-- A token function inside nginx: the first token is refused with the
-- server's JSON report, the function is called once more and AUTH goes on
-- with the fresh token; the session is pooled, and the next smtp.connect
-- (same user, same token function) resumes it without AUTH.
function M.oauth_pool()
  local smtp = require "smtp"
  local calls, status = 0, "none"
  local function token(report)
    calls = calls + 1
    if report then status = tostring(report.status) end
    return calls == 1 and "old" or "new"
  end
  local out = {}
  for i = 1, 2 do
    local s, err = smtp.connect{ host = "127.0.0.1", port = num("port", 25), tls = "none",
                                 helo = "pool.test", timeout = 5, user = "ann", token = token,
                                 insecure_auth = true }
    if not s then
      ngx.say("connect ", i, " failed: ", err)
      return
    end
    local res, serr = s:send{ from = "a@example.com", to = "b@example.org",
                              subject = "oauth " .. i, text = "x\n" }
    out[#out + 1] = string.format("auth%d=%s reused%d=%s calls%d=%d send%d=%s", i,
      tostring(s.authenticated), i, tostring(s.reused == true), i, calls, i,
      res and res.code or serr)
    local ok, kerr = s:setkeepalive(10, 4)
    out[#out + 1] = "keepalive" .. i .. "=" .. tostring(ok or kerr)
  end
  out[#out + 1] = "report=" .. status
  ngx.say(table.concat(out, " "))
end

-- Reads one whole (possibly multi-line) reply from a transport.
local function read_reply(t, state)
  state.last = ""
  while true do
    local line, code, rest = state.buf:match("^((%d%d%d) [^\n]*\n)(.*)$")
    if not code then line, code, rest = state.buf:match("^((%d%d%d)\r?\n)(.*)$") end
    if code then
      state.buf = rest
      state.last = state.last .. line
      return tonumber(code)
    end
    local cline, cont = state.buf:match("^(%d%d%d%-[^\n]*\n)(.*)$")
    if cont then
      state.buf = cont
      state.last = state.last .. cline
    else
      local data, c, msg = t:receive()
      if not data then return nil, c .. ": " .. tostring(msg) end
      state.buf = state.buf .. data
    end
  end
end

-- The transport's own keepalive: a connection put back after EHLO comes
-- out of the same pool again (getreusedtimes() > 0) and can go on without
-- a greeting; another pool name gets a fresh one.
function M.keepalive()
  local cosocket = require "smtp.transport.cosocket"
  local host, port = arg("host", "127.0.0.1"), num("port", 25)
  local pool = "smtp-spec:" .. host .. ":" .. port
  local out = {}
  local function fail(what, code, msg)
    ngx.say(table.concat(out, " "), " FAILED ", what, ": ", tostring(code), " ", tostring(msg))
  end

  local t, code, msg = cosocket.connect(host, port, 5, nil, { pool = pool, pool_size = 4 })
  if not t then return fail("connect", code, msg) end
  local st = { buf = "" }
  out[#out + 1] = "reused1=" .. t:getreusedtimes()
  out[#out + 1] = "greeting=" .. tostring(read_reply(t, st))
  assert(t:send("EHLO keepalive.test\r\n", 1))
  out[#out + 1] = "ehlo=" .. tostring(read_reply(t, st))
  local ok, kcode, kmsg = t:setkeepalive(10, 4, "remembered")
  if not ok then return fail("setkeepalive", kcode, kmsg) end
  out[#out + 1] = "pooled=true"
  -- the object is spent once pooled
  out[#out + 1] = "after=" .. tostring(select(2, t:send("NOOP\r\n", 1)))

  local t2
  t2, code, msg = cosocket.connect(host, port, 5, nil, { pool = pool })
  if not t2 then return fail("reconnect", code, msg) end
  st = { buf = "" }
  out[#out + 1] = "reused2=" .. t2:getreusedtimes()
  out[#out + 1] = "state2=" .. tostring(t2:pooled_state())
  assert(t2:send("NOOP\r\n", 1))
  out[#out + 1] = "noop=" .. tostring(read_reply(t2, st))
  assert(t2:send("QUIT\r\n", 1))
  out[#out + 1] = "quit=" .. tostring(read_reply(t2, st))
  t2:close()

  local t3
  t3, code, msg = cosocket.connect(host, port, 5, nil, { pool = pool .. ":other" })
  if not t3 then return fail("other pool", code, msg) end
  out[#out + 1] = "reused3=" .. t3:getreusedtimes()
  out[#out + 1] = "state3=" .. tostring(t3:pooled_state())
  t3:close()
  local name = cosocket.pool_name{ host = host, port = port, tls = "starttls", helo = "h",
    user = "ann", password = "s3cret" }
  local other = cosocket.pool_name{ host = host, port = port, tls = "starttls", helo = "h",
    user = "ann", password = "other" }
  out[#out + 1] = "name_has_secret=" .. tostring(name:find("s3cret", 1, true) ~= nil)
  out[#out + 1] = "names_differ=" .. tostring(name ~= other)
  ngx.say(table.concat(out, " "))
end

-- Two connections under one pool name to two servers (ports a and b):
-- each is pooled with its own state, and each comes back out of the pool
-- with that state, whatever order the pool hands them out in. Each server
-- names itself in its reply to NOOP.
function M.pool_per_connection()
  local cosocket = require "smtp.transport.cosocket"
  local pool = "smtp-spec:one-name-two-servers"
  local out = {}
  local function fail(what, code, msg)
    ngx.say(table.concat(out, " "), " FAILED ", what, ": ", tostring(code), " ", tostring(msg))
  end
  local conns = {}
  for _, which in ipairs({ "a", "b" }) do
    local t, code, msg = cosocket.connect("127.0.0.1", num(which), 5, nil, { pool = pool, pool_size = 4 })
    if not t then return fail("connect " .. which, code, msg) end
    local st = { buf = "" }
    read_reply(t, st)   -- the greeting
    conns[which] = t
  end
  for _, which in ipairs({ "a", "b" }) do
    local ok, code, msg = conns[which]:setkeepalive(10, 4, "state of " .. which)
    if not ok then return fail("setkeepalive " .. which, code, msg) end
  end
  for i = 1, 2 do
    local t, code, msg = cosocket.connect("127.0.0.1", num(i == 1 and "a" or "b"), 5, nil, { pool = pool })
    if not t then return fail("reconnect", code, msg) end
    local st = { buf = "" }
    local state = t:pooled_state()
    assert(t:send("NOOP\r\n", 1))
    read_reply(t, st)
    out[#out + 1] = string.format("reused=%d state=[%s] noop=[%s]", t:getreusedtimes(), tostring(state),
      (st.last:gsub("%s+$", "")))
    t:close()
  end
  ngx.say(table.concat(out, " "))
end

-- Rounds of smtp.connect, s:send, s:setkeepalive against one server (a
-- fake one that breaks the pooled connection somewhere): per round the
-- send's code or error with its stage, whether the session came from the
-- pool, and whether it was retried on a fresh connection.
function M.pool_rounds()
  local smtp = require "smtp"
  local out = {}
  for i = 1, num("rounds", 2) do
    local s, err = smtp.connect{ host = "127.0.0.1", port = num("port", 25), tls = "none",
                                 helo = "pool.test", timeout = num("timeout", 5) }
    if not s then
      out[#out + 1] = string.format("round%d connect=%s", i, tostring(err))
    else
      local reused = s.reused == true
      local res, serr, info = s:send{ from = "a@example.com", to = "b@example.org",
                                      subject = "round " .. i, text = "x\n" }
      local t = res or info or {}
      out[#out + 1] = string.format("round%d send=%s stage=%s reused=%s retried=%s", i,
        res and tostring(res.code) or tostring(serr and serr:match("^(%a+):")),
        tostring(not res and t.stage or "-"), tostring(reused), tostring(t.retried_stale == true))
      if res then s:setkeepalive(10, 4) else s:close() end
    end
  end
  ngx.say(table.concat(out, " "))
end

-- The transport's TLS: STARTTLS (or implicit=1: TLS first), then EHLO
-- inside TLS. Args: port, servername, verify (1/0), implicit (1/0).
function M.starttls()
  local cosocket = require "smtp.transport.cosocket"
  local port = num("port", 25)
  local opts = { servername = arg("servername", "localhost"), verify = arg("verify", "1") == "1" }
  local out = {}
  local function done(what, code, msg)
    if what then
      out[#out + 1] = "FAILED " .. what .. ": " .. tostring(code) .. " " .. tostring(msg)
    end
    ngx.say(table.concat(out, " "))
  end
  local t, code, msg = cosocket.connect("127.0.0.1", port, 5)
  if not t then return done("connect", code, msg) end
  local st = { buf = "" }
  local ok
  if arg("implicit") == "1" then
    ok, code, msg = t:starttls(opts)
    if not ok then return done("tls", code, msg) end
    out[#out + 1] = "tls=true"
    out[#out + 1] = "greeting=" .. tostring(read_reply(t, st))
  else
    out[#out + 1] = "greeting=" .. tostring(read_reply(t, st))
    t:send("EHLO tls.test\r\n", 1)
    out[#out + 1] = "ehlo=" .. tostring(read_reply(t, st))
    out[#out + 1] = "offered=" .. tostring(st.last:find("STARTTLS", 1, true) ~= nil)
    t:send("STARTTLS\r\n", 1)
    out[#out + 1] = "starttls=" .. tostring(read_reply(t, st))
    ok, code, msg = t:starttls(opts)
    if not ok then return done("tls", code, msg) end
    out[#out + 1] = "tls=true"
  end
  t:send("EHLO tls.test\r\n", 1)
  out[#out + 1] = "ehlo2=" .. tostring(read_reply(t, st))
  out[#out + 1] = "offered2=" .. tostring(st.last:find("STARTTLS", 1, true) ~= nil)
  t:send("QUIT\r\n", 1)
  out[#out + 1] = "quit=" .. tostring(read_reply(t, st))
  t:close()
  done()
end

-- Sends after the response from a 0-delay timer (what log-phase code must
-- do); the result goes to the error log.
function M.timer()
  local opts = {
    host = arg("host", "127.0.0.1"),
    port = num("port", 25),
    from = "timer@example.com",
    to = "rcpt@example.com",
    subject = arg("subject", "sent from a timer"),
    text = "Sent from ngx.timer.at.\n",
  }
  local ok, err = ngx.timer.at(0, function(premature)
    if premature then return end
    local res, serr = require("smtp").send(opts)
    ngx.log(ngx.NOTICE, "timer send: ", res and ("ok " .. res.code) or tostring(serr))
  end)
  ngx.say(ok and "scheduled" or ("error " .. tostring(err)))
end

-- Cosockets are disabled here: the library must say so, not crash.
function M.log_phase()
  local res, err = require("smtp").send{
    host = "127.0.0.1", port = num("port", 25),
    from = "log@example.com", to = "rcpt@example.com", subject = "log phase", text = "x\n",
  }
  ngx.log(ngx.WARN, "log phase send: ", res and "ok" or tostring(err))
end

function M.init_worker()
  local t, code, msg = require("smtp.transport.cosocket").connect("127.0.0.1", 9, 1)
  ngx.log(ngx.NOTICE, "init_worker connect: ", tostring(t), " ", tostring(code), " ", tostring(msg))
end

return M
