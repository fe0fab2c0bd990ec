-- A concurrent SMTP server that answers slowly, for specs that must show a
-- client does not block (many sessions at once, each reply late):
--
--   lua5.4 spec/support/slow_server.lua [--delay SECONDS] [--max-time SECONDS]
--                                        [--cert FILE --key FILE [--implicit]
--                                         [--client-ca FILE]]
--
-- Binds 127.0.0.1 on a free port, prints "PORT <n>" on stdout, then serves
-- any number of connections at the same time (LuaSocket + one coroutine per
-- connection, socket.select as the loop). Every reply, the greeting
-- included, is sent `delay` seconds (default 0.2) after the server started
-- working on the command; pipelined commands are worked on one after the
-- other, like a real server. Each accepted message is reported on stdout:
--   MESSAGE <n> FROM <sender> TO <rcpt>[,<rcpt>...] SIZE <octets> SUBJECT <subject>
-- With --cert/--key (LuaSec needed) it offers STARTTLS until TLS is up;
-- with --implicit as well it starts TLS right after accepting (SMTPS).
-- With --client-ca it demands a client certificate signed by that CA.
-- Each handshake is reported on stdout: "TLS <protocol> CLIENT <subject CN
-- or ->".
-- Exits after --max-time seconds (default 60) or on SIGTERM.
-- Works with Lua 5.1 .. 5.4 and LuaSocket.

local socket = require "socket"

local delay, max_time = 0.2, 60
local cert, key, implicit, client_ca
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--delay" then
      delay = assert(tonumber(arg[i + 1]), "--delay needs a number")
      i = i + 1
    elseif a == "--max-time" then
      max_time = assert(tonumber(arg[i + 1]), "--max-time needs a number")
      i = i + 1
    elseif a == "--cert" then
      cert = assert(arg[i + 1], "--cert needs a file")
      i = i + 1
    elseif a == "--key" then
      key = assert(arg[i + 1], "--key needs a file")
      i = i + 1
    elseif a == "--implicit" then
      implicit = true
    elseif a == "--client-ca" then
      client_ca = assert(arg[i + 1], "--client-ca needs a file")
      i = i + 1
    else
      io.stderr:write("usage: slow_server.lua [--delay S] [--max-time S] [--cert F --key F [--implicit]]\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local tls_params
if cert then
  tls_params = {
    mode = "server", protocol = "any", key = key, certificate = cert,
    options = { "all", "no_sslv3" },
  }
  if client_ca then
    tls_params.cafile = client_ca
    tls_params.verify = { "peer", "fail_if_no_peer_cert" }
  end
end

local server = assert(socket.bind("127.0.0.1", 0, 128))
server:settimeout(0)
local _, port = server:getsockname()
io.stdout:write("PORT ", tostring(port), "\n")
io.stdout:flush()

local stop_at = socket.gettime() + max_time
local messages = 0

local conns = {}        -- socket -> connection
local sleepers = {}     -- connection -> wake-up time

local Conn = {}
Conn.__index = Conn

-- Coroutine side: these yield until the main loop can go on.
function Conn:line()
  while true do
    local i = self.buf:find("\n", 1, true)
    if i then
      local l = self.buf:sub(1, i - 1):gsub("\r$", "")
      self.buf = self.buf:sub(i + 1)
      return l
    end
    if self.eof then return nil end
    self.waiting = true
    coroutine.yield()
  end
end

function Conn:sleep(seconds)
  sleepers[self] = socket.gettime() + seconds
  coroutine.yield()
end

function Conn:reply(text)
  self:sleep(delay)
  local data = text:gsub("\n", "\r\n") .. "\r\n"
  local i = 1
  while i <= #data do
    local n, err, partial = self.sock:send(data, i)
    if n then
      i = n + 1
    elseif err == "timeout" or err == "wantwrite" or err == "wantread" then
      i = (partial or i - 1) + 1
      self:sleep(0.005)
    else
      return false
    end
  end
  return true
end

-- Wraps the connection in TLS (LuaSec), handshaking without blocking the
-- other connections. Anything the client sent before is discarded.
function Conn:start_tls()
  local ssl = require "ssl"
  local plain = self.sock
  local conn, err = ssl.wrap(plain, tls_params)
  if not conn then
    io.stderr:write("slow_server: ssl.wrap: ", tostring(err), "\n")
    return false
  end
  conn:settimeout(0)
  conns[plain] = nil
  self.sock, self.buf, self.tls = conn, "", true
  conns[conn] = self
  self.handshaking = true   -- the main loop must not read meanwhile
  while true do
    local ok, herr = conn:dohandshake()
    if ok then break end
    if herr ~= "wantread" and herr ~= "wantwrite" and herr ~= "timeout" then
      io.stderr:write("slow_server: handshake: ", tostring(herr), "\n")
      return false
    end
    self:sleep(0.002)
  end
  self.handshaking = false
  local client = "-"
  local peer = client_ca and conn:getpeercertificate()
  if peer then
    for _, e in ipairs(peer:subject()) do
      if e.oid == "2.5.4.3" or e.name == "commonName" then client = e.value end
    end
  end
  io.stdout:write("TLS ", tostring(conn:info("protocol")), " CLIENT ", client, "\n")
  io.stdout:flush()
  return true
end

local function session(c)
  if implicit and not c:start_tls() then return end
  if not c:reply("220 slow.test ESMTP slow test server") then return end
  local tx
  while true do
    local line = c:line()
    if not line then return end
    local verb = (line:match("^(%a+)") or ""):upper()
    local ok
    if verb == "EHLO" then
      local starttls = (tls_params and not c.tls) and "\n250-STARTTLS" or ""
      ok = c:reply("250-slow.test\n250-PIPELINING\n250-8BITMIME" .. starttls ..
        "\n250-ENHANCEDSTATUSCODES\n250 SIZE 10485760")
    elseif verb == "STARTTLS" and tls_params and not c.tls then
      if not c:reply("220 2.0.0 Ready to start TLS") then return end
      ok = c:start_tls()
    elseif verb == "HELO" then
      ok = c:reply("250 slow.test")
    elseif verb == "MAIL" then
      tx = { from = line:match("<([^>]*)>") or "?", to = {} }
      ok = c:reply("250 2.1.0 Ok")
    elseif verb == "RCPT" then
      if tx then tx.to[#tx.to + 1] = line:match("<([^>]*)>") or "?" end
      ok = c:reply("250 2.1.5 Ok")
    elseif verb == "DATA" then
      if not tx or #tx.to == 0 then
        ok = c:reply("503 5.5.1 Error: need RCPT command")
      else
        if not c:reply("354 End data with <CR><LF>.<CR><LF>") then return end
        local size, subject, headers = 0, "", true
        while true do
          local l = c:line()
          if not l then return end
          if l == "." then break end
          if headers then
            if l == "" then headers = false end
            local s = l:match("^[Ss]ubject:%s*(.*)$")
            if s then subject = s end
          end
          size = size + #l + 2
        end
        messages = messages + 1
        io.stdout:write(string.format("MESSAGE %d FROM %s TO %s SIZE %d SUBJECT %s\n",
          messages, tx.from, table.concat(tx.to, ","), size, subject))
        io.stdout:flush()
        tx = nil
        ok = c:reply("250 2.0.0 Ok: queued as " .. messages)
      end
    elseif verb == "RSET" then
      tx = nil
      ok = c:reply("250 2.0.0 Ok")
    elseif verb == "NOOP" then
      ok = c:reply("250 2.0.0 Ok")
    elseif verb == "QUIT" then
      c:reply("221 2.0.0 Bye")
      return
    else
      ok = c:reply("502 5.5.2 Error: command not recognized")
    end
    if not ok then return end
  end
end

local function finish(c)
  conns[c.sock] = nil
  sleepers[c] = nil
  c.sock:close()
end

local function resume(c)
  c.waiting = false
  local ok, err = coroutine.resume(c.co)
  if not ok then
    io.stderr:write("slow_server: ", tostring(err), "\n")
    finish(c)
  elseif coroutine.status(c.co) == "dead" then
    finish(c)
  end
end

while socket.gettime() < stop_at do
  -- wake the connections whose time has come
  local now = socket.gettime()
  local due, next_wake = {}, nil
  for c, t in pairs(sleepers) do
    if t <= now then
      due[#due + 1] = c
    elseif not next_wake or t < next_wake then
      next_wake = t
    end
  end
  for _, c in ipairs(due) do
    sleepers[c] = nil
    resume(c)
  end
  if #due > 0 then
    next_wake = socket.gettime()
  end

  local wait = 0.05
  if next_wake then
    wait = math.max(0, math.min(wait, next_wake - socket.gettime()))
  end
  local list = { server }
  for s, c in pairs(conns) do
    if not c.eof and not c.handshaking then list[#list + 1] = s end
  end
  local readable = socket.select(list, nil, wait)
  for _, s in ipairs(readable or {}) do
    if s == server then
      while true do
        local client = server:accept()
        if not client then break end
        client:settimeout(0)
        client:setoption("tcp-nodelay", true)
        local c = setmetatable({ sock = client, buf = "", eof = false, waiting = false }, Conn)
        c.co = coroutine.create(function() session(c) end)
        conns[client] = c
        resume(c)
      end
    else
      local c = conns[s]
      if c then
        local data, err, partial = s:receive(8192)
        data = data or partial
        if data and #data > 0 then c.buf = c.buf .. data end
        if err and err ~= "timeout" and err ~= "wantread" and err ~= "wantwrite" then
          c.eof = true
        end
        if c.waiting then resume(c) end
        if c.eof and conns[s] and not c.waiting and not sleepers[c] then finish(c) end
      end
    end
  end
end
io.stderr:write("slow_server: max time reached\n")
os.exit(0)
