-- RFC 5322 addresses: parsing mailboxes and lists (display names, quoted
-- strings, comments, angle addresses, groups) and formatting them back for
-- headers, with non-ASCII display names as RFC 2047 encoded words.
local core = require "smtp.core"

local M = {}

-- Splits s into tokens: { t = "atom"|"quoted"|"special"|"domlit", v = text }.
-- Comments are dropped; returns nil, message on malformed input.
local function tokenize(s)
  local tokens, i, n = {}, 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c:match("[ \t]") then
      i = i + 1
    elseif c == "(" then
      local depth = 0
      repeat
        local ch = s:sub(i, i)
        if ch == "\\" then i = i + 1
        elseif ch == "(" then depth = depth + 1
        elseif ch == ")" then depth = depth - 1 end
        i = i + 1
      until depth == 0 or i > n
      if depth ~= 0 then return nil, "unclosed comment" end
    elseif c == '"' then
      local buf, j = {}, i + 1
      while true do
        local ch = s:sub(j, j)
        if ch == "" then return nil, "unclosed quoted string" end
        if ch == '"' then break end
        if ch == "\\" then
          j = j + 1
          ch = s:sub(j, j)
        end
        buf[#buf + 1] = ch
        j = j + 1
      end
      tokens[#tokens + 1] = { t = "quoted", v = table.concat(buf) }
      i = j + 1
    elseif c == "[" then
      local j = s:find("]", i, true)
      if not j then return nil, "unclosed domain literal" end
      tokens[#tokens + 1] = { t = "domlit", v = s:sub(i, j) }
      i = j + 1
    elseif c:match("[<>@,;:.]") then
      tokens[#tokens + 1] = { t = "special", v = c }
      i = i + 1
    else
      local j = i
      while j <= n and not s:sub(j, j):match('[ \t()<>@,;:."%[%]]') do j = j + 1 end
      tokens[#tokens + 1] = { t = "atom", v = s:sub(i, j - 1) }
      i = j
    end
  end
  return tokens
end

local function quote_local(v)
  if v:match('^[%w!#$%%&\'*+/=?^_`{|}~%-%.\128-\255]+$') and not v:match("^%.")
      and not v:match("%.$") and not v:match("%.%.") then
    return v
  end
  return '"' .. v:gsub('(["\\])', "\\%1") .. '"'
end

-- Rebuilds an addr-spec from tokens[a..b] (local-part "@" domain).
local function addr_spec(tokens, a, b)
  local parts = {}
  for k = a, b do
    local tok = tokens[k]
    if tok.t == "quoted" then parts[#parts + 1] = quote_local(tok.v)
    elseif tok.t == "special" and tok.v ~= "@" and tok.v ~= "." then
      return nil, "unexpected '" .. tok.v .. "' in address"
    else parts[#parts + 1] = tok.v end
  end
  local addr = table.concat(parts)
  if addr == "" then return nil, "empty address" end
  return addr
end

local function phrase(tokens, a, b)
  local words = {}
  for k = a, b do
    local tok = tokens[k]
    if tok.t == "special" and tok.v ~= "." then
      return nil, "unexpected '" .. tok.v .. "' in display name"
    end
    words[#words + 1] = tok.v
  end
  local s = table.concat(words, " "):gsub(" %. ", "."):gsub(" %.", ".")
  return s
end

-- Parses one mailbox from tokens[a..b].
local function mailbox(tokens, a, b)
  local lt
  for k = a, b do
    if tokens[k].t == "special" and tokens[k].v == "<" then lt = k break end
  end
  if lt then
    local gt = b
    if not (tokens[gt].t == "special" and tokens[gt].v == ">") then
      return nil, "missing '>'"
    end
    local name, err = phrase(tokens, a, lt - 1)
    if not name then return nil, err end
    local addr
    if gt == lt + 1 then
      addr = ""
    else
      addr, err = addr_spec(tokens, lt + 1, gt - 1)
      if not addr then return nil, err end
    end
    return { name = name ~= "" and name or nil, address = addr }
  end
  local addr, err = addr_spec(tokens, a, b)
  if not addr then return nil, err end
  return { address = addr }
end

local function has_control(s)
  return s:find("[%z\1-\31\127]") ~= nil
end

-- Parses an address list ("A <a@x>, b@y, Group: c@z;") into an array of
-- { name = ..., address = ... }. Groups are flattened (an empty group, as in
-- "undisclosed-recipients:;", adds nothing). Returns nil, message on error.
function M.parse_list(s)
  if has_control(s) then return nil, "control characters in address" end
  local tokens, err = tokenize(s)
  if not tokens then return nil, err end
  local out, start, k, in_group = {}, 1, 1, false
  local function flush(stop)
    if stop >= start then
      local m, merr = mailbox(tokens, start, stop)
      if not m then return nil, merr end
      out[#out + 1] = m
    end
    return true
  end
  local depth = 0
  while k <= #tokens do
    local tok = tokens[k]
    if tok.t == "special" then
      if tok.v == "<" then depth = depth + 1
      elseif tok.v == ">" then depth = depth - 1
      elseif tok.v == ":" and depth == 0 and not in_group then
        in_group, start = true, k + 1
      elseif (tok.v == "," or tok.v == ";") and depth == 0 then
        local ok, ferr = flush(k - 1)
        if not ok then return nil, ferr end
        if tok.v == ";" then in_group = false end
        start = k + 1
      end
    end
    k = k + 1
  end
  local ok, ferr = flush(#tokens)
  if not ok then return nil, ferr end
  return out
end

-- Accepts a string (one address or a list), a { name=, address= } table,
-- or an array of either; returns a flat array of mailboxes.
function M.normalize(v)
  local out = {}
  local function add(x)
    if type(x) == "string" then
      local list, err = M.parse_list(x)
      if not list then return nil, err .. " in " .. string.format("%q", x) end
      for _, m in ipairs(list) do out[#out + 1] = m end
    elseif type(x) == "table" and x.address then
      if type(x.address) ~= "string" or has_control(x.address)
          or (x.name and (type(x.name) ~= "string" or has_control(x.name))) then
        return nil, "invalid mailbox table"
      end
      out[#out + 1] = { name = x.name, address = x.address }
    else
      return nil, "an address must be a string or a { name=, address= } table"
    end
    return true
  end
  if type(v) == "table" and not v.address then
    for _, x in ipairs(v) do
      local ok, err = add(x)
      if not ok then return nil, err end
    end
  elseif v ~= nil then
    local ok, err = add(v)
    if not ok then return nil, err end
  end
  return out
end

local function needs_quotes(name)
  return name:find('[%(%)<>@,;:\\".%[%]]') ~= nil
end

-- "Name <addr>" for headers; non-ASCII names as encoded words.
-- col: the column where this mailbox starts (for folding encoded words).
function M.format(m, col)
  local name = m.name
  local addr = "<" .. m.address .. ">"
  if not name or name == "" then return m.address end
  if not core.header_is_plain(name) then
    return core.encode_words(name, col or 0, true) .. " " .. addr
  end
  if needs_quotes(name) then
    name = '"' .. name:gsub('(["\\])', "\\%1") .. '"'
  end
  return name .. " " .. addr
end

-- The domain of an address, for Message-ID.
function M.domain(addr)
  return addr:match("@%[?([^@%]]+)%]?$")
end

return M
