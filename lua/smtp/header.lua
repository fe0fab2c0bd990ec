-- Header field values: folding at 78 columns (RFC 5322 2.1.1, 2.2.3),
-- RFC 2047 encoded words for what cannot travel as ASCII, and the checks
-- that keep a value on its own header line.
local core = require "smtp.core"

local M = {}

M.SOFT_LIMIT = 78   -- RFC 5322: lines SHOULD stay within 78 characters
M.HARD_LIMIT = 998  -- and MUST stay within 998
-- An encoded word needs 12 characters of "=?UTF-8?Q?...?=" around its
-- payload: with less room than this left on a line, start a new one.
local ENCODED_MIN_ROOM = 24

-- CR or LF would end the header line and start a header of the caller's
-- choosing (header injection): such values are refused, never cleaned.
function M.has_line_break(s)
  return s:find("[\r\n]") ~= nil
end

-- ---- the folder ------------------------------------------------------------

-- Builds one folded value from tokens. Folding inserts CRLF before
-- whitespace (RFC 5322 2.2.3), so a value only ever folds at a separator
-- the caller marked as foldable, and unfolding gives back the same text.
local Folder = {}
Folder.__index = Folder

-- col: the column where the value starts (after "Name: ").
function M.folder(col)
  return setmetatable({ out = {}, col = col, has_token = false, longest = col }, Folder)
end

function Folder:_newline()
  self.out[#self.out + 1] = "\r\n"
  self.col = 0
end

function Folder:_put(s)
  self.out[#self.out + 1] = s
  local last = s:match("\n([^\n]*)$")
  if last then
    -- The text carried its own folds (encoded words): every line of it
    -- counts for the 998 check.
    for line in s:gmatch("([^\n]*)\n") do
      local len = #line:gsub("\r$", "")
      if self.col + len > self.longest then self.longest = self.col + len end
      self.col = 0
    end
    self.col = #last
  else
    self.col = self.col + #s
  end
  if self.col > self.longest then self.longest = self.col end
end

-- Adds token after sep (a run of spaces or tabs, "" for none). When the
-- token would pass column 78 and the line already holds a token, the
-- separator starts a new line instead; a token wider than a line stays
-- whole on its own line (the caller keeps tokens under 998).
function Folder:add(token, sep)
  sep = sep or ""
  if self.has_token and sep ~= "" and self.col + #sep + #token > M.SOFT_LIMIT then
    self:_newline()
  end
  self:_put(sep .. token)
  self.has_token = true
end

-- Adds text as RFC 2047 encoded words (UTF-8, B or Q, whichever is
-- shorter; Q only keeps characters that are safe in a phrase too).
function Folder:add_encoded(text, sep)
  sep = sep or ""
  if self.has_token and sep ~= "" and self.col + #sep + ENCODED_MIN_ROOM > M.SOFT_LIMIT then
    self:_newline()
  end
  local start = math.min(self.col + #sep, M.SOFT_LIMIT - 1)
  self:_put(sep .. core.encode_words(text, start))
  self.has_token = true
end

-- The folded value and the width of its longest line (the first line
-- counted from the column the folder started at).
function Folder:result()
  return table.concat(self.out), self.longest
end

-- ---- unstructured values (Subject, user headers) --------------------------------

-- Folds a printable ASCII value at its whitespace, keeping every space and
-- tab. Returns nil when some word cannot fit in 998 octets.
local function fold_plain(value, col)
  local f = M.folder(col)
  for sep, word in value:gmatch("([ \t]*)([^ \t]+)") do f:add(word, sep) end
  local trailing = value:match("[^ \t]([ \t]*)$") or value
  if trailing ~= "" then f:_put(trailing) end
  local folded, longest = f:result()
  if longest > M.HARD_LIMIT then return nil end
  return folded
end

-- An unstructured value for "Name: value": folded ASCII when it is plain,
-- else encoded words (which also carries an ASCII word too long for a line).
function M.unstructured(name, value)
  local col = #name + 2
  if core.header_is_plain(value) then
    local folded = fold_plain(value, col)
    if folded then return folded end
  end
  return core.encode_words(value, math.min(col, M.SOFT_LIMIT - 1))
end

-- ---- names and parameters ----------------------------------------------------

-- RFC 5322 atext, for Lua character classes.
local ATEXT = "%w!#$%%&'*+/=?^_`{|}~%-"

function M.is_atom_phrase(s)
  return s:match("^[" .. ATEXT .. "]+$") ~= nil or
    (s:match("^[" .. ATEXT .. "][" .. ATEXT .. " ]*[" .. ATEXT .. "]$") ~= nil
     and not s:find("  ", 1, true))
end

function M.quote(s)
  return '"' .. s:gsub('(["\\])', "\\%1") .. '"'
end

-- A word that can stay as it is in a phrase: ASCII atext that does not
-- look like an encoded word.
local function is_plain_atom(word)
  return word:match("^[" .. ATEXT .. "]+$") ~= nil and not word:find("=?", 1, true)
    and #word <= M.SOFT_LIMIT - 4
end

-- Encodes a run of words, packing whole words into each encoded word.
-- Readers ignore the white space between two encoded words (RFC 2047 6.2),
-- so the space after a word travels inside its encoded word; cutting only
-- there keeps every word whole even for readers that wrongly keep that
-- white space too (Python's email shows one extra space, not a space in
-- the middle of a word). Only a single word too long for one encoded word
-- is cut, by the C encoder.
local function add_encoded_run(f, words, sep)
  local function emit(text)
    local encoded = core.encode_words(text, 1)
    if encoded:find("\r\n", 1, true) then
      f:add_encoded(text, sep)
    else
      f:add(encoded, sep)
    end
    sep = " "
  end
  local chunk
  for i, word in ipairs(words) do
    local piece = i < #words and (word .. " ") or word
    local candidate = chunk and (chunk .. piece) or piece
    if chunk and core.encode_words(candidate, 1):find("\r\n", 1, true) then
      emit(chunk)
      chunk = piece
    else
      chunk = candidate
    end
  end
  emit(chunk)
end

-- A name that is not printable ASCII: only the runs of words that need it
-- become encoded words, the ASCII words between them stay atoms (the space
-- between an atom and an encoded word is kept by every reader). A name
-- with other spacing than single spaces is encoded whole, spaces and all.
local function add_encoded_phrase(f, name, sep)
  if name:find("^ ") or name:find(" $") or name:find("  ", 1, true) or name:find("\t") then
    f:add_encoded(name, sep)
    return
  end
  local run, first = {}, true
  local function next_sep()
    local s = first and sep or " "
    first = false
    return s
  end
  local function flush()
    if #run > 0 then add_encoded_run(f, run, next_sep()) end
    run = {}
  end
  for word in name:gmatch("[^ ]+") do
    if is_plain_atom(word) then
      flush()
      f:add(word, next_sep())
    else
      run[#run + 1] = word
    end
  end
  flush()
end

-- A display name (or group name) as a phrase: atoms when it is only
-- words, a quoted string when it holds specials, encoded words where it is
-- not printable ASCII or has a word no line could hold.
function M.add_phrase(f, name, sep)
  local longest_word = 0
  for word in name:gmatch("[^ \t]+") do
    if #word > longest_word then longest_word = #word end
  end
  if not core.header_is_plain(name) or longest_word > M.SOFT_LIMIT - 4 then
    add_encoded_phrase(f, name, sep)
    return
  end
  local text = M.is_atom_phrase(name) and name or M.quote(name)
  -- Whitespace inside a quoted string is FWS too (RFC 5322 3.2.4).
  local first = true
  for space, word in text:gmatch("([ \t]*)([^ \t]+)") do
    f:add(word, first and sep or space)
    first = false
  end
end

return M
