-- The load test's HTTP load generator (Lua 5.x + LuaSocket), run as its
-- own process by load/loadtest.lua:
--   lua5.4 load/generator.lua NGINX_PORT N C QUERY PROGRESS_FILE
-- Sends N requests GET /send?id=<1..N>&QUERY over C keep-alive HTTP/1.1
-- connections (opened over the first LOAD_RAMP seconds, default 2), each
-- connection one request at a time (so at most C are in flight), and
-- prints per request that got no HTTP 200 "FAILED id why", then "DONE n ok
-- failed seconds" and each outcome the handler reported ("OUTCOME accepted
-- 1234"). Every second it writes the number of finished requests to
-- PROGRESS_FILE (for the fault runs' timing). A connection whose request
-- was answered "not_sent" waits LOAD_BACKOFF seconds (default 1) before its
-- next request, as a client told "temporary failure" does.
local socket = require "socket"

local port, n, c, query, progress_file = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3]),
  arg[4] or "", arg[5]
assert(port and n and c, "usage: generator.lua NGINX_PORT N C QUERY PROGRESS_FILE")
local REQUEST_TIMEOUT = 120

local next_id, finished, ok, failed = 1, 0, 0, 0
local outcomes = {}
local conns = {}    -- socket -> state

local function write_progress()
  if not progress_file then return end
  local f = io.open(progress_file .. ".tmp", "w")
  if f then
    f:write(finished, "\n")
    f:close()
    os.rename(progress_file .. ".tmp", progress_file)
  end
end

local function open()
  local s = socket.tcp()
  s:settimeout(5)
  local r, err = s:connect("127.0.0.1", port)
  if not r then
    s:close()
    return nil, err
  end
  s:setoption("tcp-nodelay", true)
  s:settimeout(0)
  return s
end

local function fail(id, why)
  failed = failed + 1
  finished = finished + 1
  print("FAILED " .. id .. " " .. tostring(why))
end

-- Starts the next request on a connection (opening one when needed).
local function start(st)
  if next_id > n then return false end
  local id = next_id
  next_id = next_id + 1
  if not st.sock then
    local s, err = open()
    if not s then
      fail(id, "connect: " .. tostring(err))
      return true
    end
    st.sock = s
    conns[s] = st
  end
  st.id, st.buf, st.t0 = id, "", socket.gettime()
  local req = "GET /send?id=" .. id .. "&" .. query .. " HTTP/1.1\r\nHost: load\r\n\r\n"
  st.sock:settimeout(5)
  local sent, err = st.sock:send(req)
  st.sock:settimeout(0)
  if not sent then
    conns[st.sock] = nil
    st.sock:close()
    st.sock = nil
    fail(id, "send: " .. tostring(err))
  end
  return true
end

local function drop(st, why)
  conns[st.sock] = nil
  st.sock:close()
  st.sock = nil
  fail(st.id, why)
  st.id = nil
end

-- A complete response in st.buf: its status and body, and what is left.
local function parse(buf)
  local head_end = buf:find("\r\n\r\n", 1, true)
  if not head_end then return nil end
  local head = buf:sub(1, head_end - 1)
  local len = tonumber(head:match("\r\n[Cc]ontent%-[Ll]ength:%s*(%d+)"))
  if not len then return false end
  if #buf < head_end + 3 + len then return nil end
  return tonumber(head:match("^HTTP/%d%.%d (%d+)")), buf:sub(head_end + 4, head_end + 3 + len),
    head:lower():find("connection: close", 1, true) ~= nil
end

local t0 = socket.gettime()
-- The C connections open over RAMP seconds, not in one burst: a real
-- server (Postfix starts an smtpd process per new connection) is not hit
-- by C new connections in the same millisecond.
local RAMP = tonumber(os.getenv("LOAD_RAMP") or "2")
local BACKOFF = tonumber(os.getenv("LOAD_BACKOFF") or "1")
local slots = {}
for i = 1, c do slots[i] = { start_at = t0 + RAMP * (i - 1) / c } end
local last_progress = 0
while finished < n do
  local list = {}
  for s in pairs(conns) do list[#list + 1] = s end
  local ramping = socket.gettime() - t0 < RAMP
  if #list == 0 then
    -- none open yet, or every connection failed to open: start (over)
    local now = socket.gettime()
    for _, st in ipairs(slots) do
      if next_id <= n and not st.id and now >= st.start_at then start(st) end
    end
    if not next(conns) then socket.sleep(ramping and 0.01 or 0.1) end
  else
    local readable = socket.select(list, nil, ramping and 0.01 or 0.5)
    for _, s in ipairs(readable or {}) do
      local st = conns[s]
      if st then
        local data, err, partial = s:receive(65536)
        data = data or partial
        if data and #data > 0 then st.buf = st.buf .. data end
        local status, body, close = parse(st.buf)
        if status == false then
          drop(st, "no Content-Length")
        elseif status then
          finished = finished + 1
          local pause = 0
          if status == 200 then
            ok = ok + 1
            local outcome = body:match("^%S+ %S+ (%S+)")
            outcomes[outcome or "?"] = (outcomes[outcome or "?"] or 0) + 1
            -- a client told "not sent" (a temporary failure) waits before
            -- its next message, as clients do
            if outcome == "not_sent" then pause = BACKOFF end
          else
            failed = failed + 1
            print("FAILED " .. st.id .. " HTTP " .. tostring(status))
          end
          st.id = nil
          if close then
            conns[s] = nil
            s:close()
            st.sock = nil
          end
          if pause > 0 then st.start_at = socket.gettime() + pause else start(st) end
        elseif err == "closed" then
          drop(st, "closed by nginx")
          start(st)
        end
      end
    end
    local now = socket.gettime()
    for s, st in pairs(conns) do
      if st.id and now - st.t0 > REQUEST_TIMEOUT then
        drop(st, "no response in " .. REQUEST_TIMEOUT .. " s")
        start(st)
      end
      if not st.id and s and next_id > n then
        conns[s] = nil
        s:close()
        st.sock = nil
      end
    end
    for _, st in ipairs(slots) do
      if not st.id and next_id <= n and now >= st.start_at then start(st) end
    end
  end
  local now = socket.gettime()
  if now - last_progress >= 1 then
    last_progress = now
    write_progress()
  end
end
write_progress()
print(string.format("DONE %d %d %d %.3f", n, ok, failed, socket.gettime() - t0))
for k, v in pairs(outcomes) do print("OUTCOME " .. k .. " " .. v) end
