-- RFC 5322 / MIME message composer: the header (addresses, encoded words,
-- folding, user headers in a stable order), the MIME tree built by
-- smtp.mime, the envelope, and a source that streams the whole message in
-- constant memory with its exact size known up front.
local core = require "smtp.core"
local errors = require "smtp.errors"
local address = require "smtp.address"
local header = require "smtp.header"
local mime = require "smtp.mime"

local M = {}
local Message = {}
Message.__index = Message

local function argerror(text)
  return errors.fail("argument", text)
end

-- ---- Date and Message-ID ------------------------------------------------------------

-- RFC 5322 3.3 date with the local offset, e.g. "Sat, 28 Nov 2026 20:43:53 +0100".
function M.date(t)
  return core.date(t or os.time())
end

-- A unique id: 96 random bits and the time, at the sender's domain.
function M.message_id(domain)
  return "<" .. mime.random_hex(12) .. "." .. string.format("%x", os.time()) .. "@" ..
    (domain or "localhost") .. ">"
end

-- id-right must be a dot-atom (RFC 5322 3.6.4); other domains (literals,
-- UTF-8) fall back to this host's name.
local function id_domain(d)
  if d and d:match("^[%w%-]+[%w%-%.]*$") and not d:find("..", 1, true) and not d:match("%.$") then
    return d
  end
  return nil
end

-- "<left@right>" from what the caller gave (brackets optional).
local function check_message_id(id)
  local bare = id:match("^<(.*)>$") or id
  local left, right = bare:match("^([^@<>%s\"]+)@([^@<>%s\"]+)$")
  if not left or not core.header_is_plain(bare) then return nil end
  return "<" .. left .. "@" .. right .. ">"
end

-- Types were checked against smtp.options before anything here runs;
-- what is left are values (addresses, header names, line lengths), which
-- return the failure triple (see docs/api.md, Errors).

local ADDRESS_FIELDS = { "from", "to", "cc", "bcc", "reply_to", "sender" }

-- ---- user headers ---------------------------------------------------------------------

local HEADER_NAME = "^[!-9;-~]+$"  -- RFC 5322 2.2: printable, no colon

-- Fields the composer writes itself: a second copy would make the message
-- ambiguous (RFC 5322 3.6 allows most of them once), so each has an option.
local OWN_FIELDS = {
  from = "from", sender = "sender", to = "to", cc = "cc", bcc = "bcc",
  ["reply-to"] = "reply_to", subject = "subject", date = "date", ["message-id"] = "message_id",
  ["mime-version"] = "text, html and attachments", ["content-type"] = "text, html and attachments",
  ["content-transfer-encoding"] = "text, html and attachments",
  ["content-disposition"] = "attachments", ["content-id"] = "attachments",
  -- Like Bcc: it names blind copies and must never reach a recipient.
  ["resent-bcc"] = "bcc",
  ["list-unsubscribe"] = "unsubscribe", ["list-unsubscribe-post"] = "unsubscribe",
}

-- List-Unsubscribe (RFC 2369) and, for a one-click URL, List-Unsubscribe-Post
-- (RFC 8058, which requires HTTPS): the header values, or nil, err.
local function unsubscribe_values(u)
  if u == nil then return {} end
  local uris = {}
  if u.url then
    if not u.url:match("^https://[!-~]+$") or u.url:find("[<>\"]") then
      return nil, "unsubscribe.url must be an https:// URL without spaces, <, > or quotes (RFC 8058)"
    end
    uris[#uris + 1] = "<" .. u.url .. ">"
  end
  if u.mailto then
    local target = u.mailto:gsub("^mailto:", "")
    if not target:match("^[!-~]+$") or target:find("[<>\"]") or not target:find("@", 1, true) then
      return nil, "unsubscribe.mailto must be an address or a mailto: URI in ASCII"
    end
    uris[#uris + 1] = "<mailto:" .. target .. ">"
  end
  local out = { { "List-Unsubscribe", table.concat(uris, ", ") } }
  if u.url then out[2] = { "List-Unsubscribe-Post", "List-Unsubscribe=One-Click" } end
  return out
end

-- headers = { {"X-A", "1"}, {"X-B", "2"} } keeps its order; a map
-- { ["X-A"] = "1" } is sorted by name, so the output is reproducible.
local function header_pairs(h)
  local list = {}
  if #h > 0 then
    for i, pair in ipairs(h) do list[i] = { pair[1], pair[2] } end
  else
    local names = {}
    for k in pairs(h) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do list[#list + 1] = { k, h[k] } end
  end
  return list
end

local function user_headers(h)
  if h == nil then return {} end
  local list = header_pairs(h)
  for _, pair in ipairs(list) do
    local name, value = pair[1], tostring(pair[2])
    if #value > M.MAX_VALUE then
      return nil, "header " .. name:sub(1, 76) .. " is longer than " .. M.MAX_VALUE .. " octets"
    end
    if not name:match(HEADER_NAME) or #name > 76 then
      return nil, "invalid header name " .. errors.quote(name)
    end
    local own = OWN_FIELDS[name:lower()]
    if own then return nil, "header " .. name .. " is written by the composer (use " .. own .. ")" end
    if header.has_line_break(value) then return nil, "header " .. name .. " contains CR or LF" end
    pair[2] = value
  end
  return list
end

-- ---- addresses --------------------------------------------------------------------------

local function address_entries(spec)
  local lists = {}
  for _, field in ipairs(ADDRESS_FIELDS) do
    local entries, err = address.entries(spec[field])
    if not entries then return nil, field .. ": " .. err end
    lists[field] = entries
  end
  for _, field in ipairs({ "from", "sender" }) do
    for _, e in ipairs(lists[field]) do
      if e.group then return nil, field .. ": groups are not allowed here" end
    end
  end
  -- A domain with non-ASCII labels is written as A-labels in the header
  -- when the local part is ASCII: every client shows it, and the message
  -- needs no SMTPUTF8 for it. (A UTF-8 local part stays as it is and makes
  -- the message need SMTPUTF8.) The envelope keeps the U-labels.
  for _, field in ipairs(ADDRESS_FIELDS) do
    for _, m in ipairs(address.flatten(lists[field])) do
      if not (m.address:match("^(.*)@") or m.address):find("[\128-\255]") then
        local ascii, ierr = address.ascii_domain(m.address)
        if not ascii then return nil, field .. ": " .. ierr end
        m.header_address = ascii
      end
    end
  end
  if #lists.from == 0 then return nil, "from is required" end
  if #lists.sender > 1 then return nil, "sender takes one address" end
  if #lists.from > 1 and #lists.sender == 0 then
    return nil, "from has several mailboxes: give sender too (RFC 5322 3.6.2)"
  end
  return lists
end

-- The envelope: the Sender (or first From) and every To, Cc and Bcc
-- mailbox, groups opened, each address once.
local function envelope_of(lists, override)
  local to, seen = {}, {}
  for _, field in ipairs({ "to", "cc", "bcc" }) do
    for _, m in ipairs(address.flatten(lists[field])) do
      if not seen[m.address] then
        seen[m.address] = true
        to[#to + 1] = m.address
      end
    end
  end
  local env = { from = (lists.sender[1] or lists.from[1]).address, to = to }
  if override then
    for k, v in pairs(override) do env[k] = v end
    if type(env.to) == "string" then env.to = { env.to } end
  end
  return env
end

-- ---- the header --------------------------------------------------------------------------

-- Caps on what one message's header may cost: each value the caller gives
-- (a subject, a header field's value) and the whole header section. Real
-- servers cut far sooner (Postfix: 100 KB per field), and a header is
-- built in memory, so a runaway value must fail, not cost gigabytes.
M.MAX_VALUE = 65536
M.MAX_HEADER = 1048576

local function header_values(spec)
  local v = { subject = spec.subject }
  if spec.subject and #spec.subject > M.MAX_VALUE then
    return nil, "subject is longer than " .. M.MAX_VALUE .. " octets"
  end
  if spec.subject and header.has_line_break(spec.subject) then
    return nil, "subject contains CR or LF"
  end
  if type(spec.date) == "string" then
    if header.has_line_break(spec.date) then return nil, "date contains CR or LF" end
    -- A date-time is printable ASCII (RFC 5322 3.3): no NUL, ESC or 8-bit
    -- octets in a message declared 7-bit.
    if spec.date == "" or #spec.date > 200 or spec.date:find("[^\t\32-\126]") then
      return nil, "date is not an RFC 5322 date-time: " .. errors.quote(spec.date)
    end
    v.date = spec.date
  else
    v.date = M.date(spec.date)
  end
  if spec.message_id then
    v.message_id = check_message_id(spec.message_id)
    if not v.message_id then
      return nil, "invalid message_id " .. errors.quote(spec.message_id)
    end
  end
  if spec.message_id_domain and not id_domain(spec.message_id_domain) then
    return nil, "invalid message_id_domain " .. errors.quote(spec.message_id_domain)
  end
  local extra, err = user_headers(spec.headers)
  if not extra then return nil, err end
  local unsub, uerr = unsubscribe_values(spec.unsubscribe)
  if not unsub then return nil, uerr end
  for _, pair in ipairs(unsub) do extra[#extra + 1] = pair end
  v.extra = extra
  return v
end

-- No line of the header may pass 998 octets, whatever went into it.
local function check_line_lengths(block)
  for line in block:gmatch("([^\n]*)\n") do
    if #line - 1 > header.HARD_LIMIT then
      return nil, "a header line would be longer than 998 octets: " .. line:sub(1, 40) .. "..."
    end
  end
  return true
end

local function build_header(lists, values, mime_headers)
  local h = {}
  local function add(name, value) h[#h + 1] = name .. ": " .. value .. "\r\n" end
  local function add_addresses(name, entries)
    if #entries > 0 then add(name, address.format_list(entries, #name + 2)) end
  end
  add_addresses("From", lists.from)
  add_addresses("Sender", lists.sender)
  add_addresses("To", lists.to)
  add_addresses("Cc", lists.cc)
  add_addresses("Reply-To", lists.reply_to)
  if values.subject then add("Subject", header.unstructured("Subject", values.subject)) end
  add("Date", values.date)
  add("Message-ID", values.message_id)
  for _, pair in ipairs(values.extra) do add(pair[1], header.unstructured(pair[1], pair[2])) end
  add("MIME-Version", "1.0")
  local block = table.concat(h) .. mime_headers
  if #block > M.MAX_HEADER then
    return nil, "the header section would be longer than " .. M.MAX_HEADER .. " octets"
  end
  local ok, err = check_line_lengths(block)
  if not ok then return nil, err end
  return block
end

-- ---- the body -----------------------------------------------------------------------------

local function body_tree(spec)
  local text = spec.text and mime.text_part(spec.text, "plain")
  local html = spec.html and mime.text_part(spec.html, "html")
  local leaves = {}
  for i, att in ipairs(spec.attachments or {}) do
    local leaf, err = mime.attachment(att)
    if not leaf then return nil, "attachments[" .. i .. "]: " .. err end
    local ok, lerr = check_line_lengths(mime.part_headers(leaf))
    if not ok then return nil, "attachments[" .. i .. "]: " .. lerr end
    leaves[#leaves + 1] = leaf
  end
  return mime.layout(text, html, leaves)
end

-- ---- the message --------------------------------------------------------------------------

-- Builds a message from options checked by smtp.options; returns the
-- message object or nil, "argument: ...", info.
function M.new(spec)
  local lists, aerr = address_entries(spec)
  if not lists then return argerror(aerr) end
  local values, verr = header_values(spec)
  if not values then return argerror(verr) end

  local id_from = (lists.sender[1] or lists.from[1]).address
  local domain = spec.message_id_domain or id_domain(address.domain(id_from))
    or id_domain(core.hostname()) or "localhost"
  values.message_id = values.message_id or M.message_id(domain)

  local root, berr = body_tree(spec)
  if not root then return argerror(berr) end
  local mime_headers, items, body_size = mime.render(root)
  local head, herr = build_header(lists, values, mime_headers)
  if not head then return argerror(herr) end

  local self = setmetatable({}, Message)
  self.message_id = values.message_id
  self.header = head .. "\r\n"
  -- Display names and subjects are encoded words; only a UTF-8 address
  -- (in any field, Reply-To included) leaves 8-bit octets in the header,
  -- and then the message needs SMTPUTF8 whatever the envelope says.
  self.utf8_headers = head:find("[\128-\255]") ~= nil
  self.items = items
  self.size = body_size and (#self.header + body_size) or nil
  self.envelope = envelope_of(lists, spec.envelope)
  return self
end

-- A source function: each call returns the next chunk, nil at the end, or
-- nil, message when an attachment file cannot be read. Every call of
-- msg:source() starts over, so a message can be sent again.
function Message:source()
  local body = mime.source(self.items)
  local head = self.header
  return function()
    if head then
      local h = head
      head = nil
      return h
    end
    return body()
  end
end

-- The whole message as one string (for small messages: it reads every
-- attachment file into memory). nil, message when a file cannot be read.
function Message:tostring()
  local out, src = {}, self:source()
  while true do
    local chunk, err = src()
    if not chunk then
      if err then return nil, err end
      return table.concat(out)
    end
    out[#out + 1] = chunk
  end
end

M.Message = Message
return M
