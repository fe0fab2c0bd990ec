-- MIME structure for composed messages (RFC 2045-2047, 2183, 2231, 2387):
-- leaf parts with the transfer encoding each one needs, the multipart tree
-- (mixed > alternative > related), boundaries, and a source that streams
-- the whole body, reading attachment files block by block.
--
-- Nothing is ever sent as 8bit: the message is built before anyone knows
-- whether the server offers 8BITMIME, so every part is 7bit, quoted-
-- printable or base64.
local errors = require "smtp.errors"
local core = require "smtp.core"
local header = require "smtp.header"
local mimetypes = require "smtp.mimetypes"

local M = {}

local READ_BLOCK = 65536   -- attachment files are read in blocks this size
local B64_LINE = 76        -- RFC 2045 6.8: at most 76 characters a line
local MERGE_LIMIT = 16384  -- small strings are joined into one chunk

-- ---- random boundaries -------------------------------------------------------------

-- n random octets as 2n hex digits, from OpenSSL's generator (core.random_hex:
-- reseeded after fork, so nginx workers never share a sequence).
M.random_hex = core.random_hex

-- "=_" cannot occur in quoted-printable (which writes "=" as "=3D") nor in
-- base64, so only 7bit parts can hold a boundary by chance; 96 random bits
-- make even that unlikely, and it is checked all the same.
local function new_boundary()
  return "=_" .. M.random_hex(12)
end

-- ---- sizes and encodings -------------------------------------------------------------

-- The exact length of core.b64encode(n octets, 76): groups of 4 characters,
-- CRLF after every full line and after the last partial one.
function M.base64_size(n)
  local chars = math.ceil(n / 3) * 4
  return chars + 2 * math.ceil(chars / B64_LINE)
end

-- Text in canonical form (RFC 2046 4.1.1): every line end CRLF
-- (core.crlf: CRLF, a bare CR and a bare LF each become CRLF).
M.crlf = core.crlf

-- RFC 2045 2.7 7bit data: ASCII without NUL (and here without other
-- controls than tab), CR and LF only as CRLF, lines of at most max_line
-- octets. core.text_shape gives all three in one pass: -> 7bit, only CRLF.
local function is_7bit(s, max_line)
  local only_crlf, seven_bit, longest = core.text_shape(s)
  return seven_bit and only_crlf and longest <= max_line, only_crlf
end

-- Encodes in-memory data with the lightest encoding that keeps every
-- octet: 7bit when it already is, quoted-printable for text when that is
-- not longer than base64 (mostly ASCII), else base64. Text stays 7bit only
-- with lines of at most 78 characters; longer ones go quoted-printable
-- (soft line breaks), as Python's email package does, so that relays that
-- wrap long lines (Haraka splits at 990) cannot damage the message.
local function encode_memory(data, is_text)
  local seven_bit, only_crlf = is_7bit(data, is_text and header.SOFT_LIMIT or header.HARD_LIMIT)
  if seven_bit then return data, "7bit" end
  if is_text and only_crlf then
    local qp = core.qpencode(data)
    if #qp <= M.base64_size(#data) then return qp, "quoted-printable" end
  end
  return core.b64encode(data, B64_LINE), "base64"
end

-- ---- parameters (RFC 2045 5.1, RFC 2231) ---------------------------------------------

-- The length of the UTF-8 sequence a lead byte starts (1 for ASCII and
-- for bytes that start none).
local function sequence_length(b)
  if b >= 0xc2 and b <= 0xdf then return 2 end
  if b >= 0xe0 and b <= 0xef then return 3 end
  if b >= 0xf0 and b <= 0xf4 then return 4 end
  return 1
end

-- s cut into whole UTF-8 characters (an invalid byte is one on its own),
-- so that RFC 2231 sections never split one: decoders decode each section.
local function characters(s)
  local out, i = {}, 1
  while i <= #s do
    local n = sequence_length(s:byte(i))
    local ch = s:sub(i, i + n - 1)
    if n > 1 and (#ch < n or not ch:match("^.[\128-\191]+$")) then n, ch = 1, s:sub(i, i) end
    out[#out + 1] = ch
    i = i + n
  end
  return out
end

-- RFC 2231 attribute-char: token characters other than "*", "'" and "%".
local function percent_encode(ch)
  return (ch:gsub("[^%w!#$&+%-%.%^_`|~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Cuts the characters into sections whose encoded length stays within
-- room (first_room for the first one).
local function sections(chars, encode, first_room, room)
  local out, cur, limit = {}, "", first_room
  for _, ch in ipairs(chars) do
    local e = encode(ch)
    if #cur > 0 and #cur + #e > limit then
      out[#out + 1] = cur
      cur, limit = "", room
    end
    cur = cur .. e
  end
  out[#out + 1] = cur
  return out
end

local function is_printable_ascii(s)
  return not s:find("[^\32-\126]")
end

-- RFC 2045 token: printable ASCII without space and tspecials.
local function is_token(s)
  return s ~= "" and is_printable_ascii(s) and not s:find('[ ()<>@,;:\\"/%[%]?=]')
end

local function escape_quoted(c)
  return header.quote(c):sub(2, -2)
end

-- The tokens of one parameter: name=value or name="value" when the value
-- is printable ASCII, name*=utf-8''%.. (RFC 2231) when it is not. Values
-- too long for a folded line are cut into numbered sections (name*0=,
-- name*1=, ...), each with " ", "*NN*=" and ";" fitting in 78 columns.
-- File names are always quoted, as mail clients expect.
function M.param_tokens(name, value, quoted)
  local room = header.SOFT_LIMIT - 8 - #name
  if not quoted and is_token(value) and #value <= room then return { name .. "=" .. value } end
  if is_printable_ascii(value) then
    local whole = header.quote(value)
    if #whole <= room + 2 then return { name .. "=" .. whole } end
    local out = {}
    for k, piece in ipairs(sections(characters(value), escape_quoted, room, room)) do
      out[k] = name .. "*" .. (k - 1) .. '="' .. piece .. '"'
    end
    return out
  end
  local charset = "utf-8''"
  local parts = sections(characters(value), percent_encode, room - #charset, room)
  if #parts == 1 then return { name .. "*=" .. charset .. parts[1] } end
  local out = {}
  for k, piece in ipairs(parts) do
    out[k] = name .. "*" .. (k - 1) .. "*=" .. (k == 1 and charset or "") .. piece
  end
  return out
end

-- "value; p1; p2" folded for "Name: ": params is an array of { name, value,
-- quoted }.
local function with_params(name, first, params)
  local tokens = { first }
  for _, p in ipairs(params) do
    for _, t in ipairs(M.param_tokens(p[1], p[2], p[3])) do tokens[#tokens + 1] = t end
  end
  local f = header.folder(#name + 2)
  for k, t in ipairs(tokens) do
    f:add(t .. (k < #tokens and ";" or ""), k == 1 and "" or " ")
  end
  return name .. ": " .. f:result() .. "\r\n"
end

-- ---- leaf parts -------------------------------------------------------------------

-- A leaf: { type = "text/plain", params = {...}, encoding = "7bit",
-- body = encoded string } or, for a file, file = { path=, size=, label= }.
-- disposition, filename and content_id are set for attachments.

-- The text or html body: canonical line ends, ending with a line end.
function M.text_part(text, subtype)
  local canonical = M.crlf(text)
  if canonical ~= "" and canonical:sub(-2) ~= "\r\n" then canonical = canonical .. "\r\n" end
  local body, encoding = encode_memory(canonical, true)
  return { type = "text/" .. subtype, params = { { "charset", "utf-8" } },
           encoding = encoding, body = body }
end

local function basename(path)
  return path:match("([^/\\]+)$") or path
end

-- Parameters the composer writes itself: a caller's copy would spoof the
-- name a mail client shows (name="evil.exe") or break the structure.
local OWN_PARAMS = { name = "filename", boundary = "the composer" }

-- "type/subtype" and the caller's parameters (RFC 2045 5.1: "; attribute
-- = value", the value a token or a quoted-string), parsed so that they are
-- emitted again encoded like the composer's own: { { name, value }, ... }.
-- Returns nil, reason for anything else (an unbalanced quote, a stray
-- character, a parameter given twice or one the composer writes).
local function parse_content_type(ct)
  local base, rest = ct:match("^%s*([%w!#$&^_%.%+%-]+/[%w!#$&^_%.%+%-]+)%s*(.-)%s*$")
  if not base or not is_printable_ascii(ct) then return nil, "not type/subtype" end
  local params, seen, i = {}, {}, 1
  while i <= #rest do
    local attr, after = rest:match("^;%s*([%w!#$%%&'%*%+%-%.%^_`{|}~]+)%s*=%s*()", i)
    if not attr then return nil, "parameters must be ; name=value" end
    local value, stop
    if rest:sub(after, after) == '"' then
      local j, buf = after + 1, {}
      while true do
        local c = rest:sub(j, j)
        if c == "" then return nil, "unbalanced quote" end
        if c == '"' then break end
        if c == "\\" then
          j = j + 1
          c = rest:sub(j, j)
          if c == "" then return nil, "unbalanced quote" end
        end
        buf[#buf + 1] = c
        j = j + 1
      end
      value, stop = table.concat(buf), j + 1
    else
      value = rest:match('^[^%s;"]+', after)
      if not value or not is_token(value) then return nil, "bad value for " .. attr end
      stop = after + #value
    end
    local lname = attr:lower()
    if lname:find("*", 1, true) then return nil, "RFC 2231 parameters are written by the composer" end
    if OWN_PARAMS[lname] then return nil, lname .. " is written by " .. OWN_PARAMS[lname] end
    if seen[lname] then return nil, lname .. " given twice" end
    seen[lname] = true
    params[#params + 1] = { lname, value }
    i = rest:match("^%s*()", stop)
  end
  return base:lower(), params
end

-- Content-ID: the msg-id without its angle brackets, as the HTML's
-- "cid:" URLs name it (RFC 2392).
local function check_content_id(cid)
  local bare = cid:match("^<(.*)>$") or cid
  if bare == "" or not is_printable_ascii(bare) or bare:find('[%s<>()",;:\\%[%]]') then
    return nil
  end
  return bare
end

-- Opens the file once now to refuse an unreadable one before anything is
-- sent, and to learn its size; the content is read later, while sending.
local function probe_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot open " .. tostring(err) end
  local first, rerr = f:read(1)
  if not first and rerr then
    f:close()
    return nil, "cannot read " .. path .. ": " .. tostring(rerr)
  end
  local size = f:seek("end")
  f:close()
  return { path = path, size = size }
end

local function valid_utf8(s)
  local rest = s:gsub("[\240-\244][\128-\191][\128-\191][\128-\191]", "")
    :gsub("[\224-\239][\128-\191][\128-\191]", ""):gsub("[\194-\223][\128-\191]", "")
  return not rest:find("[\128-\255]")
end

local function attachment_type(att, filename)
  if att.content_type == nil then
    return mimetypes.guess(filename), nil
  end
  local base, params = parse_content_type(att.content_type)
  if not base then
    return nil, "invalid content_type " .. errors.quote(att.content_type) .. " (" .. params .. ")"
  end
  if base:match("^multipart/") then
    return nil, "content_type " .. base .. " cannot be an attachment (the composer builds multiparts)"
  end
  return base, params
end

-- The body of an attachment: a file to stream, or the content encoded now.
-- Text known to be UTF-8 gets its charset unless the caller named one.
local function set_body(leaf, att, has_charset)
  if att.path ~= nil then
    local file, err = probe_file(att.path)
    if not file then return nil, err end
    file.label = att.path
    leaf.file, leaf.encoding = file, "base64"
    return true
  end
  local is_text = leaf.type:match("^text/") ~= nil
  leaf.body, leaf.encoding = encode_memory(att.content, is_text)
  if is_text and not has_charset and att.content:find("[\128-\255]") and valid_utf8(att.content) then
    table.insert(leaf.params, 1, { "charset", "utf-8" })
  end
  return true
end

-- The values a header would carry, checked before anything is built.
local function check_attachment(att)
  if (att.path == nil) == (att.content == nil) then
    return nil, "give either path or content"
  end
  for _, field in ipairs({ "path", "filename", "content_type", "content_id", "disposition" }) do
    if att[field] and header.has_line_break(att[field]) then
      return nil, field .. " contains CR or LF"
    end
  end
  if att.filename == "" then return nil, "filename is empty" end
  -- C's fopen would stop at a NUL: the file read would not be the one named.
  if att.path and att.path:find("\0", 1, true) then return nil, "path contains a NUL" end
  if att.disposition ~= nil and att.disposition ~= "attachment" and att.disposition ~= "inline" then
    return nil, "disposition must be \"attachment\" or \"inline\""
  end
  return true
end

-- One attachment as a leaf, or nil, message. Types were checked by the
-- caller; this checks values.
function M.attachment(att)
  local ok, err = check_attachment(att)
  if not ok then return nil, err end
  local filename = att.filename or (att.path and basename(att.path))
  local ctype, params = attachment_type(att, filename)
  if not ctype then return nil, params end
  local leaf = { type = ctype, params = {}, filename = filename, disposition = att.disposition }
  local has_charset = false
  for k, p in ipairs(params or {}) do
    leaf.params[k] = p
    if p[1] == "charset" then has_charset = true end
  end
  if filename then leaf.params[#leaf.params + 1] = { "name", filename, true } end
  if att.content_id ~= nil then
    leaf.content_id = check_content_id(att.content_id)
    if not leaf.content_id then return nil, "invalid content_id " .. errors.quote(att.content_id) end
  end
  ok, err = set_body(leaf, att, has_charset)
  if not ok then return nil, err end
  -- RFC 2046 5.2.1: message/* may not be encoded.
  if ctype:match("^message/") and leaf.encoding ~= "7bit" then
    return nil, ctype .. " needs 7bit content; send it as application/octet-stream"
  end
  return leaf
end

-- ---- structure ------------------------------------------------------------------

local function multipart(subtype, children, params)
  return { type = "multipart/" .. subtype, params = params or {}, children = children }
end

-- The tree for the bodies and attachments:
--   text + html          -> multipart/alternative
--   html + inline cid    -> multipart/related (the html first)
--   regular attachments  -> multipart/mixed around the rest
-- Inline parts with a Content-ID only join multipart/related when there
-- is an HTML body that can refer to them; otherwise they are attachments.
function M.layout(text, html, attachments)
  local related, regular = { html }, {}
  for _, a in ipairs(attachments) do
    if html and a.content_id and a.disposition ~= "attachment" then
      a.disposition = a.disposition or "inline"
      related[#related + 1] = a
    else
      a.disposition = a.disposition or "attachment"
      regular[#regular + 1] = a
    end
  end
  if #related > 1 then
    html = multipart("related", related, { { "type", "text/html" } })
  end
  local body = html
  if text and html then
    body = multipart("alternative", { text, html })
  elseif text then
    body = text
  end
  if #regular == 0 then return body or M.text_part("", "plain") end
  local children = { body }
  for _, a in ipairs(regular) do children[#children + 1] = a end
  return multipart("mixed", children)
end

-- ---- rendering --------------------------------------------------------------------

-- The MIME header lines of a part (the top one goes in the message header).
function M.part_headers(node)
  local params = {}
  for k, p in ipairs(node.params) do params[k] = p end
  if node.boundary then params[#params + 1] = { "boundary", node.boundary } end
  local h = { with_params("Content-Type", node.type, params) }
  if node.encoding then h[#h + 1] = "Content-Transfer-Encoding: " .. node.encoding .. "\r\n" end
  if node.disposition then
    local dparams = {}
    if node.filename then dparams[1] = { "filename", node.filename, true } end
    h[#h + 1] = with_params("Content-Disposition", node.disposition, dparams)
  end
  if node.content_id then
    h[#h + 1] = "Content-ID: <" .. node.content_id .. ">\r\n"
  end
  return table.concat(h)
end

local function memory_bodies(node, out)
  if node.children then
    for _, c in ipairs(node.children) do memory_bodies(c, out) end
  elseif node.body then
    out[#out + 1] = node.body
  end
  return out
end

-- Gives each multipart a boundary that no in-memory body contains (file
-- parts are base64, which cannot contain one).
local function assign_boundaries(node, bodies, used)
  if not node.children then return end
  local b
  repeat
    b = new_boundary()
    local clash = used[b]
    for _, body in ipairs(bodies) do
      if clash then break end
      clash = body:find(b, 1, true) ~= nil
    end
  until not clash
  used[b] = true
  node.boundary = b
  for _, c in ipairs(node.children) do assign_boundaries(c, bodies, used) end
end

-- Collects the body as items: strings (small ones merged) and file items.
local Items = {}
Items.__index = Items

local function new_items()
  return setmetatable({ list = {}, pending = {}, pending_size = 0, size = 0 }, Items)
end

function Items:flush()
  if #self.pending > 0 then
    self.list[#self.list + 1] = table.concat(self.pending)
    self.pending, self.pending_size = {}, 0
  end
end

function Items:string(s)
  if s == "" then return end
  if self.size then self.size = self.size + #s end
  if #s >= MERGE_LIMIT then
    self:flush()
    self.list[#self.list + 1] = s
    return
  end
  self.pending[#self.pending + 1] = s
  self.pending_size = self.pending_size + #s
  if self.pending_size >= MERGE_LIMIT then self:flush() end
end

function Items:file(file)
  self:flush()
  self.list[#self.list + 1] = file
  if self.size and file.size then
    self.size = self.size + M.base64_size(file.size)
  else
    self.size = nil
  end
end

local function emit_body(node, items)
  if not node.children then
    if node.file then items:file(node.file) else items:string(node.body) end
    return
  end
  for k, child in ipairs(node.children) do
    items:string((k == 1 and "" or "\r\n") .. "--" .. node.boundary .. "\r\n")
    items:string(M.part_headers(child) .. "\r\n")
    emit_body(child, items)
  end
  items:string("\r\n--" .. node.boundary .. "--\r\n")
end

-- Renders the tree after the message header: returns the top part's MIME
-- header lines, the body items and their total size (nil when a file's
-- size is unknown).
function M.render(root)
  assign_boundaries(root, memory_bodies(root, {}), {})
  local items = new_items()
  emit_body(root, items)
  items:flush()
  return M.part_headers(root), items.list, items.size
end

-- ---- streaming --------------------------------------------------------------------

-- A function returning a file's base64 encoding block by block, nil at the
-- end, or nil, message when the file cannot be read or changed size.
local function file_stream(file)
  local f, err = io.open(file.path, "rb")
  if not f then return nil, "attachment " .. file.label .. ": " .. tostring(err) end
  local enc, read, done = core.b64_encoder(B64_LINE), 0, false
  return function()
    if done then return nil end
    local block, rerr = f:read(READ_BLOCK)
    if block then
      read = read + #block
      return enc:update(block)
    end
    done = true
    f:close()
    if rerr then return nil, "attachment " .. file.label .. ": " .. tostring(rerr) end
    if file.size and read ~= file.size then
      -- The size was announced (SIZE=, msg.size): a file that changed since
      -- must not go out as if it were the message we measured.
      return nil, "attachment " .. file.label .. " changed size while the message was sent"
    end
    return enc:finish()
  end
end

-- The source: each call returns the next chunk, nil at the end, or nil,
-- message on a read error. Files are opened only when their turn comes.
function M.source(items)
  local k, stream, failed = 0, nil, nil
  return function()
    if failed then return nil, failed end
    while true do
      if stream then
        local chunk, err = stream()
        if chunk and chunk ~= "" then return chunk end
        if err then
          failed = err
          return nil, err
        end
        if not chunk then stream = nil end
      else
        k = k + 1
        local item = items[k]
        if item == nil then return nil end
        if type(item) == "string" then return item end
        local serr
        stream, serr = file_stream(item)
        if not stream then
          failed = serr
          return nil, serr
        end
      end
    end
  end
end

return M
