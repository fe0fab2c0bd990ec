-- A scriptable SMTP-ish server for specs, run as its own process:
--
--   lua5.4 spec/support/fake_server.lua SCRIPT_FILE RECORD_FILE
--
-- Binds 127.0.0.1 on a free port, prints "PORT <n>" on stdout and serves
-- connections one after another, following the script (see servers.lua and
-- the step list below).  Every byte received is appended to RECORD_FILE.
-- Never runs longer than script.timeout seconds (default 10) in total.
--
-- Steps (applied to each connection in order):
--   { send = "bytes" }                  write bytes
--   { sendfn = "return ..." }           write the bytes returned by a Lua chunk
--   { expect = "^EHLO " }               read a line, check it against a Lua pattern;
--                                       on mismatch reply "500 5.5.2 unexpected",
--                                       log "MISMATCH: <line>" to stderr, end connection
--   { read = "line" | "data" | "all" }  read a line / up to "." / until the client closes
--   { sleep = seconds }                 pause
--   { trickle = "bytes", interval = s } write one byte at a time
--   { close = true }                    close now (ends the script for this connection)
--   { reset = true }                    close with SO_LINGER 0 (RST)
--   { starttls = true }                 TLS handshake as server on this connection
--                                       (after e.g. { send = "220 go ahead\r\n" });
--                                       bytes the client sent ahead, still unread,
--                                       are discarded (as a correct server does) and
--                                       "TLS: discarded N bytes read ahead" is logged
--   { read = "bdat" }                   read BDAT commands, each with its payload of
--                                       exactly the octets it announces, up to and
--                                       including the one with LAST (no replies);
--                                       any other line is a mismatch (as for expect)
--   { silence = seconds }               nothing may arrive for that long; if the client
--                                       sends anything, "AHEAD: ..." is logged (the
--                                       bytes stay buffered for the next steps)
--   { drain = seconds }                 read (and record) whatever arrives for that long
--   { serve = rules }                   answer each command as it comes, until a rule
--                                       with close = true or the client closes (ends
--                                       the script for this connection)
--   { batch = rules, quiet = seconds }  read commands until none arrives for `quiet`
--                                       seconds (default 0.3), then write all their
--                                       replies at once, in one write
-- Rules (serve, batch) are tried in order, the first match wins:
--   { "^MAIL ", "250 ok\r\n",             Lua pattern for the command line, reply
--     times = n,                        the rule matches its first n commands only
--     last = "250 queued\r\n",          reply to a BDAT ... LAST instead of the reply
--     data = "250 queued\r\n",          after the reply, read the data up to "." and
--                                       send this (serve: after each; batch: once,
--                                       after the batch's replies)
--     silence = seconds,                serve: before replying, nothing more may arrive
--                                       ("AHEAD: ..." logged otherwise)
--     close = true,                     serve: close after the reply
--     after_data = true | false,        serve: the rule matches only a command that
--                                       was (true) / was not (false) already received
--                                       when the reply to an end of data ("." or
--                                       BDAT ... LAST) went out, i.e. one pipelined
--                                       after the end of data
--     set = "flag", clear = "flag",     after a match, set / clear a named flag
--     when = "flag" }                   the rule matches only while the flag is set
--   A BDAT command's payload (the octets it announces) is read before its rule
--   applies. A command no rule matches gets "500 5.5.2 unexpected", is logged
--   as "MISMATCH: <line>" and ends the connection.
-- After the last step the server reads until the client closes, then closes.
--
-- TLS (LuaSec, loaded only when a script uses it):
--   tls = { cert = "server.crt", key = "server.key",     script-level options
--           cafile = "ca.crt", verify = "peer" | {...},  (optional: ask for and
--           protocol = "any", ciphers = "..." }           check client certificates)
--   implicit_tls = true                 handshake right after accept (SMTPS)
-- After the handshake every step goes through TLS.  The record file keeps
-- the bytes exactly as the client sent them: plaintext before the
-- handshake, then the decrypted plaintext, appended to the same file with
-- no marker in between (the handshake itself is not recorded).  stderr
-- gets "TLS: handshake ok <protocol>" or "TLS: handshake failed: <error>",
-- and "TLS: client certificate CN=<cn>" when the client sent one (ask for
-- it with verify = { "peer", "fail_if_no_peer_cert" } and cafile); a failed
-- handshake ends the connection, not the server.
-- Works with Lua 5.1 .. 5.4.

local socket = require "socket"

local script_file, record_file = arg[1], arg[2]
if not script_file or not record_file then
  io.stderr:write("usage: fake_server.lua SCRIPT_FILE RECORD_FILE\n")
  os.exit(2)
end

local load_chunk = loadstring or load  -- luacheck: ignore loadstring

local function load_file_table(path)
  local f = assert(io.open(path, "rb"))
  local src = f:read("*a")
  f:close()
  local chunk = assert(load_chunk(src, "=" .. path))
  local t = chunk()
  assert(type(t) == "table", "script must return a table")
  return t
end

local script = load_file_table(script_file)
local steps = script.steps or {}
local connections = script.connections or 1
local start = socket.gettime()
local deadline = start + (script.timeout or 10)

local record = assert(io.open(record_file, "ab"))

local ssl_ctx   -- LuaSec context, made on first use

local function log(...)
  io.stderr:write(table.concat({ ... }), "\n")
  io.stderr:flush()
end

local function remaining()
  return deadline - socket.gettime()
end

local function timed_out()
  log("TIMEOUT after ", string.format("%.2f", socket.gettime() - start), " s")
  record:close()
  os.exit(3)
end

local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
io.stdout:write("PORT ", tostring(port), "\n")
io.stdout:flush()

---------------------------------------------------------------------------
-- a connection with its own input buffer
---------------------------------------------------------------------------

local Conn = {}
Conn.__index = Conn

function Conn.new(sock)
  return setmetatable({ sock = sock, raw = sock, buf = "", eof = false }, Conn)
end

-- LuaSec reports a would-block as "wantread"/"wantwrite"
local function would_block(err)
  return err == "timeout" or err == "wantread" or err == "wantwrite"
end

-- Waits for input (bounded by the deadline) and appends it to the buffer.
-- Returns true if something was read, false on EOF or error.
function Conn:more()
  if self.eof then return false end
  while true do
    local left = remaining()
    if left <= 0 then timed_out() end
    local readable = socket.select({ self.sock }, nil, math.min(left, 0.5))
    if readable[self.sock] or readable[1] then break end
  end
  self.sock:settimeout(0)
  local data, err, partial = self.sock:receive(65536)
  data = data or partial
  if data and #data > 0 then
    record:write(data)
    record:flush()
    self.buf = self.buf .. data
  end
  if err and not would_block(err) then
    self.eof = true
  end
  return data ~= nil and #data > 0
end

-- One line up to LF; returns it without CRLF, or nil at EOF.
function Conn:line()
  while true do
    local nl = self.buf:find("\n", 1, true)
    if nl then
      local line = self.buf:sub(1, nl - 1)
      self.buf = self.buf:sub(nl + 1)
      return (line:gsub("\r$", ""))
    end
    if not self:more() and self.eof then return nil end
  end
end

-- Everything up to and including a line that is exactly ".".
function Conn:data()
  while true do
    local line = self:line()
    if line == nil then return nil end
    if line == "." then return true end
  end
end

function Conn:all()
  while not self.eof do self:more() end
  self.buf = ""
  return true
end

-- Exactly n octets (a BDAT payload), or nil at EOF.
function Conn:bytes(n)
  while #self.buf < n do
    if not self:more() and self.eof then return nil end
  end
  local s = self.buf:sub(1, n)
  self.buf = self.buf:sub(n + 1)
  return s
end

-- True when nothing is buffered and nothing arrives for `seconds` (or the
-- client closed); false as soon as a byte is there (it stays buffered).
function Conn:silent(seconds)
  if #self.buf > 0 then return false end
  local stop = socket.gettime() + seconds
  while not self.eof do
    local left = stop - socket.gettime()
    if left <= 0 then return true end
    if remaining() <= 0 then timed_out() end
    local readable = socket.select({ self.sock }, nil, math.min(left, remaining(), 0.5))
    if readable[self.sock] or readable[1] then
      self:more()
      if #self.buf > 0 then return false end
    end
  end
  return true
end

-- Reads (and records) whatever arrives for `seconds`; it stays buffered.
function Conn:drain(seconds)
  local stop = socket.gettime() + seconds
  while not self.eof do
    local left = stop - socket.gettime()
    if left <= 0 then return end
    if remaining() <= 0 then timed_out() end
    local readable = socket.select({ self.sock }, nil, math.min(left, remaining(), 0.5))
    if readable[self.sock] or readable[1] then self:more() end
  end
end

-- One command line; for BDAT also its payload. Returns the line, whether it
-- is a BDAT command and whether that carries LAST; nil at EOF.
function Conn:command()
  local line = self:line()
  if line == nil then return nil end
  local n = line:match("^[Bb][Dd][Aa][Tt] +(%d+)")
  if not n then return line, false, false end
  n = tonumber(n)
  if n > 0 and not self:bytes(n) then return nil end
  return line, true, line:find("%s[Ll][Aa][Ss][Tt]%s*$") ~= nil
end

function Conn:send(bytes)
  local i = 1
  while i <= #bytes do
    local left = remaining()
    if left <= 0 then timed_out() end
    self.sock:settimeout(math.min(left, 0.5))
    local last, err, partial_last = self.sock:send(bytes, i)
    if last then
      i = last + 1
    elseif would_block(err) then
      i = (partial_last or (i - 1)) + 1
    else
      return nil, err
    end
  end
  return true
end

local function tls_context()
  if ssl_ctx then return ssl_ctx end
  local ok, ssl = pcall(require, "ssl")
  if not ok then
    log("TLS: LuaSec (require \"ssl\") is not available: ", tostring(ssl))
    os.exit(4)
  end
  local t = script.tls or {}
  if not (t.cert and t.key) then
    log("TLS: the script needs tls = { cert = ..., key = ... }")
    os.exit(4)
  end
  local params = {
    mode = "server",
    protocol = t.protocol or "any",
    options = t.options or { "all", "no_sslv2", "no_sslv3" },
    certificate = t.cert,
    key = t.key,
    cafile = t.cafile,
    verify = t.verify or "none",
    ciphers = t.ciphers,
  }
  local ctx, err = ssl.newcontext(params)
  if not ctx then
    log("TLS: cannot make the context: ", tostring(err))
    os.exit(4)
  end
  ssl_ctx = { ssl = ssl, ctx = ctx }
  return ssl_ctx
end

-- Wraps the connection in TLS and runs the handshake (bounded by the
-- script's deadline).  Returns true, or nil after logging the error.
function Conn:starttls()
  local tls = tls_context()
  if #self.buf > 0 then
    log("TLS: discarded ", #self.buf, " bytes read ahead")
  end
  self.buf = ""
  local conn, err = tls.ssl.wrap(self.sock, tls.ctx)
  if not conn then
    log("TLS: handshake failed: ", tostring(err))
    return nil
  end
  self.sock = conn
  while true do
    local left = remaining()
    if left <= 0 then timed_out() end
    conn:settimeout(math.min(left, 0.5))
    local ok, herr = conn:dohandshake()
    if ok then break end
    if not would_block(herr) then
      log("TLS: handshake failed: ", tostring(herr))
      self.eof = true
      return nil
    end
  end
  local proto = conn.info and conn:info("protocol") or nil
  log("TLS: handshake ok ", tostring(proto or ""))
  local cert = conn.getpeercertificate and conn:getpeercertificate()
  if cert then
    local cn
    for _, e in ipairs(cert:subject() or {}) do
      if e.name == "commonName" or e.oid == "2.5.4.3" then cn = e.value end
    end
    log("TLS: client certificate CN=", tostring(cn))
  end
  return true
end

-- close with SO_LINGER 0; through TLS the option is set on the descriptor
function Conn:reset()
  pcall(function()
    if self.sock == self.raw then
      self.sock:setoption("linger", { on = true, timeout = 0 })
    else
      local t = socket.tcp()
      t:close()
      t:setfd(self.sock:getfd())
      t:setoption("linger", { on = true, timeout = 0 })
      t:setfd(-1)
    end
  end)
end

local function sleep(seconds)
  local left = remaining()
  if left <= 0 then timed_out() end
  if seconds > left then
    socket.sleep(left)
    timed_out()
  end
  socket.sleep(seconds)
end

---------------------------------------------------------------------------
-- run one connection; returns when it is over
---------------------------------------------------------------------------

local function mismatch(c, line)
  c:send("500 5.5.2 unexpected\r\n")
  log("MISMATCH: ", line)
  return "mismatch"
end

-- The first rule that matches line and is not used up (rules: see the top).
-- state: { used = {}, flags = {}, chained = bool }.
local function pick(rules, state, line)
  local used, flags = state.used, state.flags
  for k, r in ipairs(rules) do
    if line:find(r[1]) and (r.times == nil or (used[k] or 0) < r.times)
        and (r.when == nil or flags[r.when])
        and (r.after_data == nil or r.after_data == (state.chained == true)) then
      used[k] = (used[k] or 0) + 1
      if r.set ~= nil then flags[r.set] = true end
      if r.clear ~= nil then flags[r.clear] = nil end
      return r
    end
  end
  return nil
end

local function reply_of(r, is_bdat, last)
  if is_bdat and last and r.last ~= nil then return r.last end
  return r[2]
end

-- BDAT chunks up to the one with LAST: true, or "gone" / "mismatch".
local function read_bdat(c)
  while true do
    local line, is_bdat, last = c:command()
    if line == nil then return "gone" end
    if not is_bdat then return mismatch(c, line) end
    if last then return true end
  end
end

-- Answers commands as they come until a close rule or EOF.
local function serve(c, rules)
  local state = { used = {}, flags = {}, chained = false }
  while true do
    local line, is_bdat, last = c:command()
    if line == nil then return "gone" end
    local r = pick(rules, state, line)
    state.chained = false
    if not r then return mismatch(c, line) end
    if r.silence and not c:silent(r.silence) then
      log("AHEAD: the client sent more before the reply to ", line)
    end
    local reply = reply_of(r, is_bdat, last)
    if reply ~= nil and not c:send(reply) then return "gone" end
    if is_bdat and last then state.chained = #c.buf > 0 end
    if r.data ~= nil then
      if not c:data() then return "gone" end
      if not c:send(r.data) then return "gone" end
      state.chained = #c.buf > 0
    end
    if r.close then return "closed" end
  end
end

-- Reads commands until a pause of `quiet` seconds, then replies to all of
-- them in one write: true, or "gone" / "mismatch".
local function batch(c, rules, quiet)
  local state, out, after_data = { used = {}, flags = {} }, {}, nil
  local how = true
  while true do
    if #c.buf == 0 and (c.eof or c:silent(quiet)) then break end
    local line, is_bdat, last = c:command()
    if line == nil then break end
    local r = pick(rules, state, line)
    if not r then
      out[#out + 1] = "500 5.5.2 unexpected\r\n"
      log("MISMATCH: ", line)
      how = "mismatch"
      break
    end
    local reply = reply_of(r, is_bdat, last)
    if reply ~= nil then out[#out + 1] = reply end
    if r.data ~= nil then after_data = r.data end
  end
  if #out > 0 and not c:send(table.concat(out)) then return "gone" end
  if how ~= true then return how end
  if after_data ~= nil then
    if not c:data() then return "gone" end
    if not c:send(after_data) then return "gone" end
  end
  return true
end

local function run_steps(c)
  if script.implicit_tls and not c:starttls() then return "gone" end
  for n, st in ipairs(steps) do
    if st.send ~= nil or st.sendfn ~= nil then
      local bytes = st.send
      if st.sendfn ~= nil then
        local fn = assert(load_chunk(st.sendfn, "=sendfn"))
        bytes = fn()
      end
      if not c:send(tostring(bytes)) then return "gone" end
    elseif st.expect ~= nil then
      local line = c:line()
      if line == nil then
        log("EOF: expected ", st.expect, " (step ", n, ")")
        return "gone"
      end
      if not line:find(st.expect) then
        c:send("500 5.5.2 unexpected\r\n")
        log("MISMATCH: ", line)
        return "mismatch"
      end
    elseif st.read ~= nil then
      local ok
      if st.read == "bdat" then
        local how = read_bdat(c)
        if how ~= true then return how end
        ok = true
      elseif st.read == "line" then
        ok = c:line() ~= nil
      elseif st.read == "data" then
        ok = c:data() ~= nil
      elseif st.read == "all" then
        ok = c:all()
      else
        error("unknown read mode " .. tostring(st.read))
      end
      if not ok then return "gone" end
    elseif st.sleep ~= nil then
      sleep(st.sleep)
    elseif st.trickle ~= nil then
      local s, interval = st.trickle, st.interval or 0.05
      for i = 1, #s do
        if i > 1 then sleep(interval) end
        if not c:send(s:sub(i, i)) then return "gone" end
      end
    elseif st.close then
      return "closed"
    elseif st.reset then
      c:reset()
      return "closed"
    elseif st.starttls then
      if not c:starttls() then return "gone" end
    elseif st.silence ~= nil then
      if not c:silent(st.silence) then
        log("AHEAD: the client sent something during a silence (step ", n, ")")
      end
    elseif st.drain ~= nil then
      c:drain(st.drain)
    elseif st.serve ~= nil then
      return serve(c, st.serve)
    elseif st.batch ~= nil then
      local how = batch(c, st.batch, st.quiet or 0.3)
      if how ~= true then return how end
    else
      error("unknown step #" .. n)
    end
  end
  return "done"
end

for _ = 1, connections do
  local left = remaining()
  if left <= 0 then timed_out() end
  server:settimeout(left)
  local sock = server:accept()
  if not sock then timed_out() end
  local c = Conn.new(sock)
  local how = run_steps(c)
  if how == "done" then c:all() end
  c.sock:close()
end

server:close()
record:close()
os.exit(0)
