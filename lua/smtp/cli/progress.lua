-- A one-line progress bar for smtp-send: counts the bytes written to the
-- connection (Bar:watch) or handed out by a source (Bar:wrap) and redraws
-- (at most every interval seconds) something like
--   [###########.........]  55%  5.5 MiB / 10.0 MiB  2.1 MiB/s
--
-- smtp-send counts at the connection, not at the message: the message goes
-- to smtp.send exactly as it does without a bar (a string or a message
-- object), so the bar cannot change what is sent, how the library inspects
-- it (8BITMIME, SMTPUTF8) or what SIZE declares.
local M = {}

-- Chunks handed to the library at once: small enough for a smooth bar.
M.SLICE = 65536

local units = { "B", "KiB", "MiB", "GiB", "TiB" }

-- 1536 -> "1.5 KiB"
function M.bytes(n)
  local u = 1
  while n >= 1024 and u < #units do
    n = n / 1024
    u = u + 1
  end
  if u == 1 then return string.format("%d B", math.floor(n)) end   -- a rate may be fractional
  return string.format("%.1f %s", n, units[u])
end

-- The text of the bar (no carriage return) for done of total bytes at rate
-- bytes per second; total may be nil (unknown size).
function M.render(done, total, rate, width)
  width = width or 20
  local parts = {}
  if total and total > 0 then
    local frac = math.min(done / total, 1)
    local fill = math.floor(frac * width + 0.5)
    parts[#parts + 1] = "[" .. string.rep("#", fill) .. string.rep(".", width - fill) .. "]"
    parts[#parts + 1] = string.format("%3d%%", math.floor(frac * 100))
    parts[#parts + 1] = M.bytes(done) .. " / " .. M.bytes(total)
  else
    parts[#parts + 1] = M.bytes(done)
  end
  parts[#parts + 1] = M.bytes(rate) .. "/s"
  return table.concat(parts, "  ")
end

local Bar = {}
Bar.__index = Bar

-- opts: total (bytes, may be nil), out (a file, default io.stderr),
-- clock (seconds as a number, default os.time), interval (default 0.1).
function M.new(opts)
  opts = opts or {}
  local clock = opts.clock or os.time
  return setmetatable({
    total = opts.total, out = opts.out or io.stderr, clock = clock,
    interval = opts.interval or 0.1, start = clock(), done = 0,
    last = nil, width = 0, drawn = false,
  }, Bar)
end

function Bar:draw()
  local now = self.clock()
  local elapsed = now - self.start
  local rate = elapsed > 0 and self.done / elapsed or 0
  local text = M.render(self.done, self.total, rate)
  local pad = self.width > #text and string.rep(" ", self.width - #text) or ""
  self.width = #text
  self.out:write("\r", text, pad)
  if self.out.flush then self.out:flush() end
  self.last = now
  self.drawn = true
end

function Bar:add(n)
  self.done = self.done + n
  -- The commands around the message are counted too: a few hundred
  -- octets, not worth more than a full bar.
  if self.total and self.done > self.total then self.done = self.total end
  local now = self.clock()
  if not self.last or now - self.last >= self.interval or (self.total and self.done >= self.total) then
    self:draw()
  end
end

-- Ends the line: redraws the final state when done, then a newline.
function Bar:finish(ok)
  -- Sent means all of it, whatever the count of octets on the way said.
  if ok and self.total then self.done = self.total end
  if ok and self.done > 0 then self:draw() end
  if self.drawn then
    self.out:write("\n")
    if self.out.flush then self.out:flush() end
    self.drawn = false
  end
end

-- A source that returns what source returns, in slices of at most
-- M.SLICE bytes, counting them.
function Bar:wrap(source)
  local buf, pos = nil, 1
  return function()
    while not buf or pos > #buf do
      local chunk, err = source()
      if type(chunk) ~= "string" then return chunk, err end
      buf, pos = chunk, 1
    end
    local piece
    if pos == 1 and #buf <= M.SLICE then
      piece = buf
    else
      piece = buf:sub(pos, pos + M.SLICE - 1)
    end
    pos = pos + #piece
    self:add(#piece)
    return piece
  end
end

-- A transport (see smtp.transport) that is t with every octet it writes
-- counted: send(s, i) and flush(engine) pass through, and so does every
-- other method, called on t itself (the C socket checks its self).
function Bar:transport(t)
  local bar = self
  local proxy = {}
  function proxy.send(_, ...)
    local n, code, msg = t:send(...)
    if n then bar:add(n) end
    return n, code, msg
  end
  if t.flush then
    function proxy.flush(_, engine)
      local before = engine:pending()
      local ok, code, msg = t:flush(engine)
      local sent = before - engine:pending()
      if sent > 0 then bar:add(sent) end
      return ok, code, msg
    end
  end
  return setmetatable(proxy, { __index = function(_, k)
    local v = t[k]
    if type(v) ~= "function" then return v end
    return function(_, ...) return v(t, ...) end
  end })
end

-- Counts what every connection smtp.send opens writes, until the returned
-- function is called: wraps smtp.transport.connect, which the library
-- looks up each time it connects.
function Bar:watch()
  local tmod = require "smtp.transport"
  local connect = tmod.connect
  tmod.connect = function(...)
    local t, code, msg = connect(...)
    if not t then return t, code, msg end
    return self:transport(t)
  end
  return function() tmod.connect = connect end
end

return M
