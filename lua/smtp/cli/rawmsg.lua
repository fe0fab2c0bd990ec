-- A whole message read by smtp-send in sendmail mode: the header section
-- split into fields (each kept byte for byte, folding included) and the
-- body left untouched, so that fields can be read (unfolded), removed
-- (Bcc) or added (From, Date, Message-ID) without rewriting the rest.
local address = require "smtp.address"

local M = {}
local Msg = {}
Msg.__index = Msg

-- A header field's name: printable ASCII but the colon (RFC 5322 2.2). The
-- obsolete syntax (RFC 5322 4.5) allows white space between the name and
-- the colon ("Bcc : x"), and such a line is a header field like any other:
-- taking it for the start of the body would send it (a Bcc!) to everyone.
local FIELD = "^([!-9;-~]+)[ \t]*:"
M.FIELD = FIELD

-- The name of the field a line starts, or nil when it starts none.
function M.field_name(line)
  return (line:match(FIELD))
end

-- Parses raw text. A leading mbox "From " line is dropped (but not a From
-- field written "From : ..."). The header section ends at the first empty
-- line, or at the first line that is not a header field (then the rest is
-- all body and a separator is added when the message is written back).
function M.parse(raw)
  local self = setmetatable({ fields = {}, body = "", nl = "\n" }, Msg)
  local pos, n = 1, #raw
  local first_end = raw:find("\n", 1, true)
  if first_end and raw:sub(first_end - 1, first_end - 1) == "\r" then self.nl = "\r\n" end
  if raw:sub(1, 5) == "From " and not M.field_name(raw:sub(1, first_end or n)) then
    pos = (first_end or n) + 1
  end
  local fields = self.fields
  while pos <= n do
    local e = raw:find("\n", pos, true)
    local line = e and raw:sub(pos, e) or raw:sub(pos)
    local content = line:gsub("\r?\n$", "")
    local name = M.field_name(content)
    if content == "" or content == "\r" then
      pos = pos + #line
      break
    elseif content:match("^[ \t]") and #fields > 0 then
      fields[#fields].text = fields[#fields].text .. line
    elseif name then
      fields[#fields + 1] = { name = name, text = line }
    else
      break
    end
    pos = pos + #line
  end
  self.body = raw:sub(pos)
  return self
end

-- The unfolded value of a field: line ends removed, tabs as spaces, trimmed.
function M.value(field)
  local text = field.text:match("^[^:]*:(.*)$") or ""
  text = text:gsub("\r?\n", ""):gsub("\t", " ")
  return (text:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- Every value of the fields called name (any case), unfolded.
function Msg:get_all(name)
  local out, lname = {}, name:lower()
  for _, f in ipairs(self.fields) do
    if f.name:lower() == lname then out[#out + 1] = M.value(f) end
  end
  return out
end

function Msg:get(name)
  return self:get_all(name)[1]
end

function Msg:has(name)
  return self:get(name) ~= nil
end

-- Removes every field called name; returns how many there were.
function Msg:remove(name)
  local kept, lname, n = {}, name:lower(), 0
  for _, f in ipairs(self.fields) do
    if f.name:lower() == lname then n = n + 1 else kept[#kept + 1] = f end
  end
  self.fields = kept
  return n
end

-- Appends a field (value must already be a valid, folded header value).
function Msg:add(name, value)
  self.fields[#self.fields + 1] = { name = name, text = name .. ": " .. value .. self.nl }
end

function Msg:tostring()
  local parts = {}
  for _, f in ipairs(self.fields) do
    local t = f.text
    if t:sub(-1) ~= "\n" then t = t .. self.nl end
    parts[#parts + 1] = t
  end
  parts[#parts + 1] = self.nl
  parts[#parts + 1] = self.body
  return table.concat(parts)
end

-- The bare addresses of the mailboxes in every field called one of names.
-- Returns a list or nil, message.
function Msg:addresses(names)
  local out = {}
  for _, name in ipairs(names) do
    for _, v in ipairs(self:get_all(name)) do
      local list, err = address.parse_list(v)
      if not list then return nil, name .. " header: " .. err end
      for _, m in ipairs(list) do out[#out + 1] = m.address end
    end
  end
  return out
end

-- The recipients a sendmail -t takes from the headers: the Resent-To/Cc/Bcc
-- fields when there are any (a resent message), else To/Cc/Bcc.
function Msg:header_recipients()
  local resent = { "Resent-To", "Resent-Cc", "Resent-Bcc" }
  for _, name in ipairs(resent) do
    if self:has(name) then return self:addresses(resent) end
  end
  return self:addresses({ "To", "Cc", "Bcc" })
end

-- The line number of the first line longer than 998 octets (CR LF not
-- counted), or nil.
function M.long_line(text, limit)
  limit = limit or 998
  local pos, line, n = 1, 1, #text
  while pos <= n do
    local e = text:find("\n", pos, true) or (n + 1)
    local len = e - pos
    if len > limit and text:sub(e - 1, e - 1) == "\r" then len = len - 1 end
    if len > limit then return line end
    pos, line = e + 1, line + 1
  end
  return nil
end

return M
