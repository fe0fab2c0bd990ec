-- Fuzzer for the RFC 5322 address parser and formatter (lua/smtp/address.lua),
-- which is Lua and so out of libFuzzer's reach.
--
--   lua5.4 fuzz/address_fuzz.lua SECONDS [CORPUS_DIR] [CRASH_DIR] [SEED]
--
-- Run from the repository root after `make` (smtp.address needs smtp.core
-- from build/lua5.4/). Inputs are random token soups and mutations of the
-- seeds in CORPUS_DIR (default fuzz/corpus/address). On the first broken
-- invariant the input is written to CRASH_DIR (default build/fuzz) as
-- crash-address-<n>, the reason is printed and the exit status is 1. A
-- saved input is replayed with: lua5.4 fuzz/address_fuzz.lua replay FILE
--
-- Invariants, for every input:
--   - parse, parse_list, entries and normalize never raise; each returns a
--     table, or nil and a string message;
--   - parse_list gives mailboxes only: address a string, name nil or a
--     non-empty string, neither with CR or LF;
--   - formatting a parsed mailbox (format, at columns 0 and 40) never
--     raises, and its only CR and LF are CRLF folds followed by a space or
--     tab (unfolded, no CR or LF is left);
--   - re-parsing the unfolded text gives one mailbox with the same address,
--     and the same display name once its RFC 2047 words are decoded;
--   - formatting the whole parsed list (groups kept) and re-parsing it gives
--     the same addresses in the same order and the same group names (RFC
--     2047 words decoded).
--
-- The last line printed is "execs N" (N inputs checked).

local function script_dir()
  local src = debug.getinfo(1, "S").source:sub(2)
  return src:match("^(.*)/[^/]*$") or "."
end
local root = script_dir() .. "/.."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/?.lua;" .. package.path
local interp = rawget(_G, "jit") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
package.cpath = root .. "/build/" .. interp .. "/?.so;" .. package.cpath

local address = require "smtp.address"
local header = require "smtp.header"
local core = require "smtp.core"

-- ---- random inputs ------------------------------------------------------------

local TOKENS = {
  "ann", "bob", "x", "example", "com", "org", "John", "Q", "Public", "a.b", "_", "!#$%&'*+/=?^`{|}~-",
  "<", ">", "@", ",", ";", ":", ".", "..", '"', "\\", "(", ")", "[", "]", " ", "  ", "\t",
  "=?UTF-8?Q?Caf=C3=A9?=", "=?", "?=", "192.0.2.1", "[192.0.2.1]", "@relay.example:",
  "ü", "日本", "\xc3", "\xff", "\xe2\x80\x8b", "é ", "Grüße",
  "\r", "\n", "\r\n", "\0", "\1", "\127",
  "ann@example.com", "<bob@example.org>", '"quoted name"', "(comment)", "((nested) c)",
  "Group:", ";", '"a\\"b"', "\\(", string.rep("w", 80), string.rep("long ", 20),
}

local function rand_token()
  return TOKENS[math.random(#TOKENS)]
end

local function random_input()
  local n, out = math.random(0, 24), {}
  for i = 1, n do out[i] = rand_token() end
  return table.concat(out)
end

local function random_byte_string()
  local n, out = math.random(0, 40), {}
  for i = 1, n do out[i] = string.char(math.random(0, 255)) end
  return table.concat(out)
end

local function mutate(s, seeds)
  local ops = math.random(1, 4)
  for _ = 1, ops do
    local len = #s
    local pos = math.random(1, len + 1)
    local k = math.random(1, 7)
    if k == 1 then                         -- insert a token
      s = s:sub(1, pos - 1) .. rand_token() .. s:sub(pos)
    elseif k == 2 and len > 0 then         -- delete a run
      local n = math.random(1, math.min(8, len))
      s = s:sub(1, pos - 1) .. s:sub(pos + n)
    elseif k == 3 and len > 0 then         -- replace one byte
      s = s:sub(1, pos - 1) .. string.char(math.random(0, 255)) .. s:sub(pos + 1)
    elseif k == 4 then                     -- splice with another seed
      local o = seeds[math.random(#seeds)]
      local cut = math.random(0, #o)
      s = s:sub(1, pos - 1) .. o:sub(cut + 1)
    elseif k == 5 and len > 0 then         -- duplicate a run
      local n = math.random(1, math.min(16, len))
      s = s:sub(1, pos - 1) .. s:sub(pos, pos + n - 1) .. s:sub(pos)
    elseif k == 6 then                     -- join with a separator
      s = s .. (math.random(2) == 1 and ", " or " ") .. seeds[math.random(#seeds)]
    else                                   -- swap a printable byte for a special
      local specials = '<>@,;:."()[]\\ '
      local c = math.random(#specials)
      s = s:sub(1, pos - 1) .. specials:sub(c, c) .. s:sub(pos + 1)
    end
  end
  return s
end

-- ---- invariants -------------------------------------------------------------------

local Failure = {}

local function fail(msg)
  error(setmetatable({ msg = msg }, Failure), 0)
end

local function check(cond, msg)
  if not cond then fail(msg) end
end

-- Calls f(...) and requires: no error, and (table) or (nil, string).
local function call_api(name, f, ...)
  local ok, r1, r2 = pcall(f, ...)
  check(ok, name .. " raised: " .. tostring(r1))
  if r1 == nil then
    check(type(r2) == "string", name .. " returned nil without a message")
    return nil
  end
  check(type(r1) == "table", name .. " returned a " .. type(r1))
  return r1
end

-- The only line breaks are CRLF folds before white space; returns the
-- unfolded text.
local function unfold_checked(v, what)
  check(type(v) == "string", what .. " is not a string")
  local rest = v:gsub("\r\n[ \t]", "")
  check(not rest:find("[\r\n]"), what .. " has a CR or LF that is not a fold: " .. string.format("%q", v))
  return (v:gsub("\r\n([ \t])", "%1"))
end

-- RFC 2047 words decoded as a reader does: only a whole white-space
-- delimited token "=?UTF-8?B|Q?payload?=" is an encoded word, and white
-- space between two adjacent encoded words disappears; all else is kept.
local function decode_word(token)
  local kind, payload = token:match("^=%?UTF%-8%?([BQ])%?([^?]*)%?=$")
  if not kind then return nil end
  if kind == "B" then return core.b64decode(payload) end
  payload = payload:gsub("_", " ")
  return (payload:gsub("=(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function decode_words(v)
  local out, prev_encoded, pos = {}, false, 1
  while pos <= #v do
    local ws = v:match("^[ \t]*", pos)
    local word = v:match("^[^ \t]*", pos + #ws)
    local decoded = word ~= "" and decode_word(word) or nil
    if not (decoded and prev_encoded) then out[#out + 1] = ws end
    out[#out + 1] = decoded or word
    prev_encoded = decoded ~= nil
    pos = pos + #ws + #word
  end
  return table.concat(out)
end

local function plain_ascii(s)
  return s:find("^[\32-\126]*$") ~= nil
end

local function check_mailbox(m, what)
  check(type(m) == "table", what .. " is not a table")
  check(m.group == nil, what .. " is a group in parse_list's result")
  check(type(m.address) == "string" and m.address ~= "", what .. " has no address")
  check(not m.address:find("[\r\n]"), what .. " address has CR/LF")
  if m.name ~= nil then
    check(type(m.name) == "string" and m.name ~= "", what .. " has an empty or non-string name")
    check(not m.name:find("[\r\n]"), what .. " name has CR/LF")
  end
end

local function roundtrip_mailbox(m)
  for _, col in ipairs({ 0, 40 }) do
    local ok, formatted = pcall(address.format, m, col)
    check(ok, "format raised: " .. tostring(formatted))
    local text = unfold_checked(formatted, "format(m, " .. col .. ")")
    local back = call_api("parse_list(format(m))", address.parse_list, text)
    check(back ~= nil, "format(m) does not parse again: " .. string.format("%q", text))
    check(#back == 1, "format(m) parses to " .. #back .. " mailboxes: " .. string.format("%q", text))
    check(back[1].address == m.address, "address changed: " .. string.format("%q -> %q via %q",
      m.address, back[1].address, text))
    if m.name then
      local got = back[1].name and decode_words(back[1].name)
      check(got == m.name, "name changed: " .. string.format("%q -> %q via %q",
        m.name, tostring(got), text))
    end
  end
end

local function shape(entries)
  local out = {}
  for _, e in ipairs(entries) do
    if e.group then
      out[#out + 1] = "group:" .. e.group
      for _, m in ipairs(e.members) do out[#out + 1] = m.address end
      out[#out + 1] = ";"
    else
      out[#out + 1] = e.address
    end
  end
  return table.concat(out, "\0")
end

local function check_input(s)
  local entries = call_api("parse", address.parse, s)
  local list = call_api("parse_list", address.parse_list, s)
  check((entries == nil) == (list == nil), "parse and parse_list disagree on success")
  call_api("entries", address.entries, s)
  call_api("normalize", address.normalize, s)
  if not list then return end
  for i, m in ipairs(list) do
    check_mailbox(m, "mailbox " .. i)
    roundtrip_mailbox(m)
    -- A parsed mailbox is accepted back as a table too.
    call_api("entries{m}", address.entries, { { name = m.name, address = m.address } })
  end
  -- The whole list, groups kept.
  local ok, formatted = pcall(address.format_list, entries, 6)
  check(ok, "format_list raised: " .. tostring(formatted))
  local text = unfold_checked(formatted, "format_list")
  local back = call_api("parse(format_list)", address.parse, text)
  check(back ~= nil, "format_list output does not parse: " .. string.format("%q", text))
  -- Group names (RFC 2047 words decoded) and addresses, in order.
  for _, e in ipairs(back) do
    if e.group then e.group = decode_words(e.group) end
  end
  local x, y = shape(entries), shape(back)
  check(x == y, "format_list round trip changed the list: " .. string.format("%q -> %q", x, y))
end

-- ---- driver -------------------------------------------------------------------------

local read_file = require("spec.support.util").read_file

local function load_seeds(dir)
  local seeds = {}
  local p = io.popen('ls -1 "' .. dir .. '" 2>/dev/null')
  if p then
    for name in p:lines() do
      local d = read_file(dir .. "/" .. name)
      if d then seeds[#seeds + 1] = d end
    end
    p:close()
  end
  if #seeds == 0 then seeds[1] = "Ann <ann@example.com>" end
  return seeds
end

local function run_one(s)
  local ok, err = pcall(check_input, s)
  if ok then return nil end
  if getmetatable(err) == Failure then return err.msg end
  return "harness error: " .. tostring(err)
end

if arg[1] == "replay" then
  local s = assert((read_file(arg[2])), "cannot read " .. tostring(arg[2]))
  local msg = run_one(s)
  if msg then
    print("FAIL: " .. msg)
    os.exit(1)
  end
  print("ok")
  os.exit(0)
end

local seconds = tonumber(arg[1]) or 10
local corpus = arg[2] or (root .. "/fuzz/corpus/address")
local crash_dir = arg[3] or (root .. "/build/fuzz")
local seed = tonumber(arg[4]) or os.time()
math.randomseed(seed)
print("address fuzzer: seed " .. seed .. ", " .. seconds .. " s, corpus " .. corpus)

local seeds = load_seeds(corpus)
local execs = 0
local deadline = os.clock() + seconds

-- Every seed as is first.
local queue = {}
for i = 1, #seeds do queue[#queue + 1] = seeds[i] end

while true do
  local s
  if #queue > 0 then
    s = table.remove(queue)
  else
    if os.clock() >= deadline then break end
    local r = math.random(10)
    if r <= 6 then
      s = mutate(seeds[math.random(#seeds)], seeds)
    elseif r <= 9 then
      s = random_input()
    else
      s = random_byte_string()
    end
  end
  execs = execs + 1
  local msg = run_one(s)
  if msg then
    os.execute('mkdir -p "' .. crash_dir .. '"')
    local path = crash_dir .. "/crash-address-" .. seed .. "-" .. execs
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
    print("FAIL: " .. msg)
    print("input: " .. string.format("%q", s))
    print("saved: " .. path)
    print("execs " .. execs)
    os.exit(1)
  end
end
print("execs " .. execs)
