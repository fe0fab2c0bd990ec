-- RFC 5322 message composer: ordered headers, encoded words, folding, a
-- text/plain body with the lightest transfer encoding that is safe.
-- (HTML and attachments come with the MIME composer.)
local core = require "smtp.core"
local address = require "smtp.address"

local M = {}
local Message = {}
Message.__index = Message

local function argerror(text)
  return nil, "argument: " .. text, { kind = "argument", message = text, temporary = false }
end

local days = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local months = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }

-- RFC 5322 3.3 date with the local offset, e.g. "Sat, 28 Nov 2026 20:43:53 +0100".
function M.date(t)
  t = t or os.time()
  local l, u = os.date("*t", t), os.date("!*t", t)
  l.isdst = false
  local offset = os.difftime(os.time(l), os.time(u))
  local sign = offset < 0 and "-" or "+"
  offset = math.abs(offset)
  return string.format("%s, %02d %s %04d %02d:%02d:%02d %s%02d%02d",
    days[l.wday], l.day, months[l.month], l.year, l.hour, l.min, l.sec,
    sign, math.floor(offset / 3600), math.floor(offset % 3600 / 60))
end

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(n)
  if f then f:close() end
  if not bytes or #bytes < n then
    local t = {}
    for i = 1, n do t[i] = string.char(math.random(0, 255)) end
    bytes = table.concat(t)
  end
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function M.message_id(domain)
  return "<" .. random_hex(12) .. "." .. string.format("%x", os.time()) .. "@" ..
    (domain or "localhost") .. ">"
end

-- Folds an unstructured ASCII value at spaces so lines stay within 78
-- columns where a space allows it; col is where the value starts.
local function fold(value, col)
  local out, line_len = {}, col
  for word, space in value:gmatch("(%S+)(%s*)") do
    if line_len > col and line_len + 1 + #word > 78 then
      out[#out + 1] = "\r\n "
      line_len = 1
    elseif #out > 0 then
      out[#out + 1] = " "
      line_len = line_len + 1
    end
    out[#out + 1] = word
    line_len = line_len + #word
    local _ = space
  end
  return table.concat(out)
end

local function has_crlf(s)
  return s:find("[\r\n]") ~= nil
end

-- An unstructured header value: plain and folded, or encoded words.
local function unstructured(name, value)
  local col = #name + 2
  if core.header_is_plain(value) then
    return fold(value, col)
  end
  return core.encode_words(value, col)
end

local function address_header(name, list)
  local parts, col = {}, #name + 2
  for i, m in ipairs(list) do
    local s = address.format(m, col)
    if i > 1 then
      if col + 2 + #s > 78 then
        parts[#parts + 1] = ",\r\n "
        col = 1
      else
        parts[#parts + 1] = ", "
        col = col + 2
      end
    end
    parts[#parts + 1] = s
    col = col + #(s:match("[^\n]*$"))
  end
  return table.concat(parts)
end

local header_name_pattern = "^[!-9;-~]+$"  -- RFC 5322 2.2: printable, no colon

-- headers = { {"X-A", "1"}, {"X-B", "2"} } keeps order; { ["X-A"] = "1" }
-- is sorted by name.
local function user_headers(h)
  if h == nil then return {} end
  if type(h) ~= "table" then return nil, "headers must be a table" end
  local list = {}
  if #h > 0 then
    for _, pair in ipairs(h) do
      if type(pair) ~= "table" then return nil, "headers array entries must be { name, value }" end
      list[#list + 1] = { pair[1], pair[2] }
    end
  else
    local names = {}
    for k in pairs(h) do names[#names + 1] = k end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(names) do list[#list + 1] = { k, h[k] } end
  end
  for _, pair in ipairs(list) do
    local name, value = pair[1], pair[2]
    if type(name) ~= "string" or not name:match(header_name_pattern) then
      return nil, "invalid header name " .. string.format("%q", tostring(name))
    end
    if type(value) == "number" then value = tostring(value) end
    if type(value) ~= "string" then return nil, "header " .. name .. " must be a string" end
    if has_crlf(value) then return nil, "header " .. name .. " contains CR or LF" end
    pair[2] = value
  end
  return list
end

-- The text body with CRLF line ends and the transfer encoding it needs:
-- 7bit when ASCII with lines of at most 998 octets, else quoted-printable.
local function text_body(text)
  local crlf = text:gsub("\r\n", "\n"):gsub("\r", "\n"):gsub("\n", "\r\n")
  local long = false
  for line in (crlf .. "\r\n"):gmatch("(.-)\r\n") do
    if #line > 998 then long = true break end
  end
  if not long and not crlf:find("[\128-\255%z]") then
    if #crlf > 0 and crlf:sub(-2) ~= "\r\n" then crlf = crlf .. "\r\n" end
    return crlf, "7bit"
  end
  return core.qpencode(text), "quoted-printable"
end

-- Builds a message; returns the message object or nil, "argument: ...", info.
function M.new(spec)
  if type(spec) ~= "table" then error("smtp.message expects a table", 2) end
  if spec.html ~= nil or spec.attachments ~= nil then
    return argerror("html and attachments are not supported yet (plain text only)")
  end
  if spec.text ~= nil and type(spec.text) ~= "string" then
    error("text must be a string", 2)
  end
  if spec.subject ~= nil and type(spec.subject) ~= "string" then
    error("subject must be a string", 2)
  end
  local lists = {}
  for _, field in ipairs({ "from", "to", "cc", "bcc", "reply_to", "sender" }) do
    local list, err = address.normalize(spec[field])
    if not list then return argerror(field .. ": " .. err) end
    lists[field] = list
  end
  if #lists.from == 0 then return argerror("from is required") end
  if #lists.sender > 1 then return argerror("sender takes one address") end
  if spec.subject and has_crlf(spec.subject) then
    return argerror("subject contains CR or LF")
  end
  local extra, herr = user_headers(spec.headers)
  if not extra then return argerror(herr) end
  for _, v in ipairs({ spec.date, spec.message_id }) do
    if type(v) ~= "string" and v ~= nil then error("date and message_id must be strings", 2) end
    if v and has_crlf(v) then return argerror("date or message_id contains CR or LF") end
  end

  local domain = address.domain(lists.from[1].address) or core.hostname() or "localhost"
  local self = setmetatable({}, Message)
  self.message_id = spec.message_id or M.message_id(domain)

  local h = {}
  local function add(name, value) h[#h + 1] = name .. ": " .. value .. "\r\n" end
  add("From", address_header("From", lists.from))
  if #lists.sender == 1 then add("Sender", address_header("Sender", lists.sender)) end
  if #lists.to > 0 then add("To", address_header("To", lists.to)) end
  if #lists.cc > 0 then add("Cc", address_header("Cc", lists.cc)) end
  if #lists.reply_to > 0 then add("Reply-To", address_header("Reply-To", lists.reply_to)) end
  if spec.subject then add("Subject", unstructured("Subject", spec.subject)) end
  add("Date", spec.date or M.date())
  add("Message-ID", self.message_id)
  for _, pair in ipairs(extra) do add(pair[1], unstructured(pair[1], pair[2])) end
  local body, cte = text_body(spec.text or "")
  add("MIME-Version", "1.0")
  add("Content-Type", "text/plain; charset=utf-8")
  add("Content-Transfer-Encoding", cte)

  self.header = table.concat(h)
  self.body = body
  self.size = #self.header + 2 + #body

  local env_to = {}
  for _, field in ipairs({ "to", "cc", "bcc" }) do
    for _, m in ipairs(lists[field]) do env_to[#env_to + 1] = m.address end
  end
  self.envelope = { from = (lists.sender[1] or lists.from[1]).address, to = env_to }
  if spec.envelope then
    self.envelope = { from = spec.envelope.from or self.envelope.from,
                      to = spec.envelope.to or self.envelope.to }
  end
  return self
end

function Message:tostring()
  return self.header .. "\r\n" .. self.body
end

-- A source function: each call returns the next chunk, nil at the end.
function Message:source()
  local parts, i = { self.header, "\r\n", self.body }, 0
  return function()
    i = i + 1
    return parts[i]
  end
end

M.Message = Message
return M
