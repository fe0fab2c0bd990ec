-- RFC 5322 addresses: parsing mailboxes and address lists (display names,
-- quoted strings, comments, angle addresses, groups) and formatting them
-- back for headers, folded, with non-ASCII display names as RFC 2047
-- encoded words. The addr-spec itself is never encoded (RFC 2047 5(3)).
--
-- An entry is a mailbox { name = "Ann" or nil, address = "ann@example.com" }
-- or a group { group = "Friends", members = { mailbox, ... } }.
local errors = require "smtp.errors"
local core = require "smtp.core"
local header = require "smtp.header"

local M = {}

-- ---- tokens -----------------------------------------------------------------

-- RFC 5322 specials and whitespace end an atom; octets >= 128 are atom text
-- (RFC 6532), so UTF-8 names and addresses parse.
local ATOM_END = '[ \t()<>%[%]:;@\\,."]'

local function has_control(s)
  return s:find("[%z\1-\8\10-\31\127]") ~= nil
end

-- A comment at s[i] (nested, with quoted pairs); returns its text without
-- the outer parentheses and the index after it, or nil, message.
local function read_comment(s, i)
  local depth, buf, j = 0, {}, i
  while j <= #s do
    local c = s:sub(j, j)
    if c == "\\" then
      j = j + 1
      buf[#buf + 1] = s:sub(j, j)
    elseif c == "(" then
      depth = depth + 1
      if depth > 1 then buf[#buf + 1] = c end
    elseif c == ")" then
      depth = depth - 1
      if depth == 0 then return table.concat(buf), j + 1 end
      buf[#buf + 1] = c
    else
      buf[#buf + 1] = c
    end
    j = j + 1
  end
  return nil, "unclosed comment"
end

-- A quoted string at s[i]; returns its content (quoted pairs resolved) and
-- the index after it, or nil, message.
local function read_quoted(s, i)
  local buf, j = {}, i + 1
  while j <= #s do
    local c = s:sub(j, j)
    if c == '"' then return table.concat(buf), j + 1 end
    if c == "\\" then
      j = j + 1
      c = s:sub(j, j)
    end
    buf[#buf + 1] = c
    j = j + 1
  end
  return nil, "unclosed quoted string"
end

-- Splits s into tokens { t = "atom"|"quoted"|"domlit"|"special"|"comment",
-- v = text, ws = whether whitespace or a comment came before it }.
local function tokenize(s)
  local tokens, i, ws = {}, 1, false
  local function push(t, v)
    tokens[#tokens + 1] = { t = t, v = v, ws = ws }
    ws = false
  end
  while i <= #s do
    local c = s:sub(i, i)
    if c == " " or c == "\t" then
      ws, i = true, i + 1
    elseif c == "(" then
      local text, j = read_comment(s, i)
      if not text then return nil, j end
      push("comment", text)
      ws, i = true, j
    elseif c == '"' then
      local text, j = read_quoted(s, i)
      if not text then return nil, j end
      push("quoted", text)
      i = j
    elseif c == "[" then
      local j = s:find("]", i, true)
      if not j then return nil, "unclosed domain literal" end
      push("domlit", s:sub(i, j))
      i = j + 1
    elseif c:find('[<>@,;:.]') then
      push("special", c)
      i = i + 1
    elseif c == ")" or c == "]" or c == "\\" then
      return nil, "unexpected '" .. c .. "'"
    else
      local j = i
      while j <= #s and not s:sub(j, j):find(ATOM_END) do j = j + 1 end
      push("atom", s:sub(i, j - 1))
      i = j
    end
  end
  return tokens
end

-- ---- addr-spec ---------------------------------------------------------------

local function is_dot_atom(s)
  if s == "" then return false end
  for label in (s .. "."):gmatch("(.-)%.") do
    if label == "" or label:find(ATOM_END) then return false end
  end
  return true
end

-- The local part as it must be written: a dot-atom when it is one, else a
-- quoted string (the same mailbox, RFC 5322 3.4.1).
local function local_part(text)
  if is_dot_atom(text) then return text end
  return header.quote(text)
end

-- ---- the parser ----------------------------------------------------------------

local Parser = {}
Parser.__index = Parser

-- Moves past comments (they carry no meaning for the address).
function Parser:peek()
  local t = self.tokens[self.i]
  while t and t.t == "comment" do
    self.i = self.i + 1
    t = self.tokens[self.i]
  end
  return t
end

-- The first of the comments right before token index i, if any.
function Parser:comment_before(i)
  local text
  while self.tokens[i - 1] and self.tokens[i - 1].t == "comment" do
    i = i - 1
    text = self.tokens[i].v
  end
  return text
end

function Parser:take()
  local t = self:peek()
  self.i = self.i + 1
  return t
end

function Parser:at(v)
  local t = self:peek()
  return t ~= nil and t.t == "special" and t.v == v
end

function Parser:describe()
  local t = self:peek()
  return t and ("'" .. t.v .. "'") or "the end"
end

-- Words (atoms, quoted strings, and the dots of "John Q. Public"); returns
-- the tokens.
function Parser:words()
  local words = {}
  while true do
    local t = self:peek()
    if not t or not (t.t == "atom" or t.t == "quoted" or (t.t == "special" and t.v == ".")) then
      return words
    end
    words[#words + 1] = self:take()
  end
end

-- The display name: words joined by one space where the source had space.
local function phrase_text(words)
  local out = {}
  for k, w in ipairs(words) do
    if k > 1 and w.ws then out[#out + 1] = " " end
    out[#out + 1] = w.v
  end
  return table.concat(out)
end

-- domain = dot-atom / domain-literal
function Parser:domain()
  local t = self:peek()
  if t and t.t == "domlit" then
    self:take()
    return t.v
  end
  local parts = {}
  while true do
    t = self:peek()
    if not t or not (t.t == "atom" or (t.t == "special" and t.v == ".")) then break end
    parts[#parts + 1] = self:take().v
  end
  local d = table.concat(parts)
  if not is_dot_atom(d) then return nil, "invalid domain " .. errors.quote(d) end
  return d
end

local function is_dot(token)
  return token.t == "special" and token.v == "."
end

-- addr-spec = local-part "@" domain, the local part's words already read.
function Parser:addr_spec(words)
  if #words == 0 then return nil, "missing local part before '@'" end
  local parts = {}
  for k, w in ipairs(words) do
    -- Space may only sit next to a dot (obs-local-part): "john doe@x" is
    -- two words, not an address.
    if k > 1 and w.ws and not (is_dot(w) or is_dot(words[k - 1])) then
      return nil, "unquoted space in address"
    end
    parts[#parts + 1] = w.v
  end
  local domain, err
  if self:at("@") then
    self:take()
    domain, err = self:domain()
    if not domain then return nil, err end
  elseif self.local_domain then
    domain = self.local_domain                   -- "root": root@<local_domain>
    if not is_dot_atom(domain) then return nil, "invalid domain " .. errors.quote(domain) end
  else
    return nil, "missing '@' in address"
  end
  local addr = local_part(table.concat(parts)) .. "@" .. domain
  if not core.valid_address(addr) then return nil, "invalid address" end
  return addr
end

-- angle-addr = "<" [obs-route] addr-spec ">"
function Parser:angle_addr()
  self:take()
  if self:at("@") then
    -- obs-route "<@relay1,@relay2:user@host>": the route is dropped
    -- (RFC 5321 C: it is to be ignored).
    while self:peek() and not self:at(":") do self:take() end
    if not self:at(":") then return nil, "malformed route in address" end
    self:take()
  end
  local addr, err = self:addr_spec(self:words())
  if not addr then return nil, err end
  if not self:at(">") then return nil, "expected '>' but found " .. self:describe() end
  self:take()
  return addr
end

-- mailbox = name-addr / addr-spec. A comment right before or after it
-- ("bob@x (Bob Smith)", the old way to give a name) names it when it has
-- no display name; comments inside it are dropped.
function Parser:mailbox()
  self:peek()
  local leading = self:comment_before(self.i)
  local words = self:words()
  local name, addr, err
  if self:at("<") then
    name = phrase_text(words)
    addr, err = self:angle_addr()
  else
    addr, err = self:addr_spec(words)
  end
  if not addr then return nil, err end
  self:peek()
  local comment = leading or self:comment_before(self.i)
  if (name == nil or name == "") and comment then
    name = comment:gsub("^%s+", ""):gsub("%s+$", "")
  end
  return { name = name ~= "" and name or nil, address = addr }
end

-- group = display-name ":" [mailbox *("," mailbox)] ";"
function Parser:group(words)
  self:take()
  local g = { group = phrase_text(words), members = {} }
  if g.group == "" then return nil, "group without a name" end
  while not self:at(";") do
    if not self:peek() then return nil, "group " .. g.group .. " lacks its closing ';'" end
    if self:at(",") then
      self:take()
    else
      local m, err = self:mailbox()
      if not m then return nil, err end
      g.members[#g.members + 1] = m
      if not self:peek() then return nil, "group " .. g.group .. " lacks its closing ';'" end
      if not (self:at(",") or self:at(";")) then
        return nil, "expected ',' or ';' but found " .. self:describe()
      end
    end
  end
  self:take()
  return g
end

-- address = mailbox / group. A group starts with a phrase and ':'.
function Parser:address()
  local start = self.i
  local words = self:words()
  if self:at(":") then return self:group(words) end
  self.i = start
  return self:mailbox()
end

-- Parses an address list ("Ann <ann@x>, bob@y, Team: c@z;") into entries,
-- groups kept. Empty elements (",,") are skipped as RFC 5322 4.4 allows.
-- local_domain, when given, completes a mailbox written without a domain
-- ("root", "root (Cron Daemon)", as cron and local mail programs write
-- them), as sendmail does with its own host name; without it such a
-- mailbox is an error.
function M.parse(s, local_domain)
  if type(s) ~= "string" then return nil, "an address list must be a string" end
  if has_control(s) then return nil, "control characters in address" end
  local tokens, err = tokenize(s)
  if not tokens then return nil, err end
  local p = setmetatable({ tokens = tokens, i = 1, local_domain = local_domain }, Parser)
  local out = {}
  while p:peek() do
    if p:at(",") then
      p:take()
    else
      local entry, perr = p:address()
      if not entry then return nil, perr end
      out[#out + 1] = entry
      if p:peek() and not p:at(",") then
        return nil, "expected ',' but found " .. p:describe()
      end
    end
  end
  return out
end

-- ---- entries from what callers give ----------------------------------------------

-- Every mailbox of the entries, groups opened.
function M.flatten(entries)
  local out = {}
  for _, e in ipairs(entries) do
    if e.group then
      for _, m in ipairs(e.members) do out[#out + 1] = m end
    else
      out[#out + 1] = e
    end
  end
  return out
end

-- Compatibility: a list parsed with groups opened.
function M.parse_list(s, local_domain)
  local entries, err = M.parse(s, local_domain)
  if not entries then return nil, err end
  return M.flatten(entries)
end

local function check_name(name, what)
  if name == nil then return true end
  if type(name) ~= "string" then return nil, what .. " must be a string" end
  if has_control(name) then return nil, "control characters in " .. what end
  return true
end

-- { name=, address= }: the address must be one bare addr-spec.
local function mailbox_from_table(x)
  local ok, err = check_name(x.name, "display name")
  if not ok then return nil, err end
  if type(x.address) ~= "string" then return nil, "address must be a string" end
  local list, perr = M.parse(x.address)
  if not list then return nil, perr .. " in " .. errors.quote(x.address) end
  if #list ~= 1 or list[1].group then
    return nil, "address must be a single mailbox, got " .. errors.quote(x.address)
  end
  return { name = x.name or list[1].name, address = list[1].address }
end

-- { group = "Team", members = { ... } }
local function group_from_table(x, add_mailboxes)
  local ok, err = check_name(x.group, "group name")
  if not ok then return nil, err end
  if x.group == "" then return nil, "group without a name" end
  local members = {}
  if x.members ~= nil then
    if type(x.members) ~= "table" then return nil, "group members must be a table" end
    local merr
    ok, merr = add_mailboxes(x.members, members)
    if not ok then return nil, merr end
  end
  return { group = x.group, members = members }
end

local function add_entry(x, out, nested)
  if type(x) == "string" then
    local list, err = M.parse(x)
    if not list then return nil, err .. " in " .. errors.quote(x) end
    for _, e in ipairs(list) do
      if nested and e.group then return nil, "a group cannot hold a group" end
      out[#out + 1] = e
    end
  elseif type(x) == "table" and x.address ~= nil then
    local m, err = mailbox_from_table(x)
    if not m then return nil, err end
    out[#out + 1] = m
  elseif type(x) == "table" and x.group ~= nil and not nested then
    local g, err = group_from_table(x, function(members, into)
      for _, y in ipairs(members) do
        local ok, merr = add_entry(y, into, true)
        if not ok then return nil, merr end
      end
      return true
    end)
    if not g then return nil, err end
    out[#out + 1] = g
  else
    return nil, "an address must be a string or a { name=, address= } table"
  end
  return true
end

-- Accepts nil, a string (one address or a list), a { name=, address= } or
-- { group=, members= } table, or an array of these; returns the entries.
function M.entries(v)
  local out = {}
  if type(v) == "table" and v.address == nil and v.group == nil then
    for _, x in ipairs(v) do
      local ok, err = add_entry(x, out, false)
      if not ok then return nil, err end
    end
  elseif v ~= nil then
    local ok, err = add_entry(v, out, false)
    if not ok then return nil, err end
  end
  return out
end

-- Compatibility (smtp.lua): the mailboxes of v, groups opened.
function M.normalize(v)
  local entries, err = M.entries(v)
  if not entries then return nil, err end
  return M.flatten(entries)
end

-- ---- formatting ------------------------------------------------------------------

-- Writes one mailbox into the folder; suffix ("," or ";") sticks to its end.
local function add_mailbox(f, m, sep, suffix)
  local addr = m.header_address or m.address
  if m.name and m.name ~= "" then
    header.add_phrase(f, m.name, sep)
    f:add("<" .. addr .. ">" .. suffix, " ")
  else
    f:add(addr .. suffix, sep)
  end
end

local function add_group(f, g, sep, suffix)
  header.add_phrase(f, g.group, sep)
  f:add(":", "")
  if #g.members == 0 then
    f:add(";" .. suffix, "")
    return
  end
  for k, m in ipairs(g.members) do
    add_mailbox(f, m, " ", k == #g.members and (";" .. suffix) or ",")
  end
end

-- The value of an address header ("To: " .. value), folded; col is where
-- the value starts.
function M.format_list(entries, col)
  local f = header.folder(col or 0)
  for k, e in ipairs(entries) do
    local sep = k == 1 and "" or " "
    local suffix = k < #entries and "," or ""
    if e.group then add_group(f, e, sep, suffix) else add_mailbox(f, e, sep, suffix) end
  end
  return (f:result())
end

-- One mailbox, "Name <addr>" (compatibility and tests).
function M.format(m, col)
  return M.format_list({ m }, col)
end

-- The address with its domain's non-ASCII labels as A-labels (IDNA2008
-- with the UTS #46 non-transitional mapping, libidn2); the address itself
-- when its domain is ASCII or a literal. nil, err naming the bad label
-- (a disallowed code point, a bidi error) otherwise.
function M.ascii_domain(addr)
  local lp, domain = addr:match("^(.*)@([^@]+)$")
  if not domain or not domain:find("[\128-\255]") or domain:find("^%[") then return addr end
  local ascii, _, err = core.idna_to_ascii(domain)
  if ascii then return lp .. "@" .. ascii end
  for label in domain:gmatch("[^.]+") do
    local ok, _, lerr = core.idna_to_ascii(label)
    if not ok then return nil, "invalid domain label " .. errors.quote(label) .. " (" .. lerr .. ")" end
  end
  return nil, "invalid domain " .. errors.quote(domain) .. " (" .. err .. ")"
end

-- The domain of an address (without the brackets of a literal).
function M.domain(addr)
  return addr:match("@%[?([^@%]]+)%]?$")
end

return M
