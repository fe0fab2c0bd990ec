-- A small JSON encoder (RFC 8259) for smtp-send --json: results and
-- reports as one line each. Strings: ", \ and every control character
-- (C0 and DEL) escaped, valid UTF-8 kept as it is, and each octet that is
-- not part of valid UTF-8 (text from a server may be anything) replaced by
-- U+FFFD, so the output is always valid UTF-8 and valid JSON. Tables: an
-- array when their keys are exactly 1..n, else an object with its keys
-- (strings or numbers, as strings) sorted, so the output is stable; an
-- empty table is {} unless its key is in opts.arrays. Numbers: integers as
-- such, others with 17 significant digits; NaN and infinities are null.
-- Functions, userdata and threads are null; a cycle or nesting deeper than
-- 64 raises an error.
local M = {}

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
              ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- Length of the valid UTF-8 sequence at byte i of s (shortest form, no
-- surrogates, at most U+10FFFF), or nil. smtp-send's terminal filter uses
-- it too.
function M.utf8_len(s, i)
  local b = s:byte(i)
  local len
  local lo, hi = 0x80, 0xBF
  if b >= 0xC2 and b <= 0xDF then
    len = 2
  elseif b >= 0xE0 and b <= 0xEF then
    len = 3
    if b == 0xE0 then lo = 0xA0 elseif b == 0xED then hi = 0x9F end
  elseif b >= 0xF0 and b <= 0xF4 then
    len = 4
    if b == 0xF0 then lo = 0x90 elseif b == 0xF4 then hi = 0x8F end
  else
    return nil
  end
  local b2 = s:byte(i + 1)
  if not b2 or b2 < lo or b2 > hi then return nil end
  for k = 2, len - 1 do
    local c = s:byte(i + k)
    if not c or c < 0x80 or c > 0xBF then return nil end
  end
  return len
end

local function string_value(s)
  if not s:find('[%c"\\\128-\255]') then return '"' .. s .. '"' end
  local out, i, n = { '"' }, 1, #s
  while i <= n do
    local b = s:byte(i)
    if b < 0x20 or b == 0x7f then
      local c = s:sub(i, i)
      out[#out + 1] = ESC[c] or string.format("\\u%04x", b)
      i = i + 1
    elseif b == 0x22 or b == 0x5c then
      out[#out + 1] = ESC[s:sub(i, i)]
      i = i + 1
    elseif b < 0x80 then
      local j = s:find('[%c"\\\128-\255]', i) or n + 1
      out[#out + 1] = s:sub(i, j - 1)
      i = j
    else
      local len = M.utf8_len(s, i)
      if len then
        out[#out + 1] = s:sub(i, i + len - 1)
        i = i + len
      else
        out[#out + 1] = "\\ufffd"
        i = i + 1
      end
    end
  end
  out[#out + 1] = '"'
  return table.concat(out)
end

local math_type = rawget(math, "type")   -- Lua 5.3 and later

local function number_value(v)
  if v ~= v or v == math.huge or v == -math.huge then return "null" end
  if math_type and math_type(v) == "integer" then return tostring(v) end
  if v == math.floor(v) and v > -2^53 and v < 2^53 then return string.format("%d", v) end
  return string.format("%.17g", v)
end

local encode

local function table_value(t, opts, key, depth, seen)
  if seen[t] then error("json: a table that contains itself", 0) end
  if depth > 64 then error("json: nested too deep", 0) end
  seen[t] = true
  local n, count = #t, 0
  for _ in pairs(t) do count = count + 1 end
  local out = {}
  if count == 0 then
    seen[t] = nil
    return (opts.arrays and opts.arrays[key]) and "[]" or "{}"
  end
  if n == count then
    for i = 1, n do out[i] = encode(t[i], opts, key, depth + 1, seen) end
    seen[t] = nil
    return "[" .. table.concat(out, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) == "string" or type(k) == "number" then keys[#keys + 1] = tostring(k) end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    out[#out + 1] = string_value(k) .. ":" .. encode(v, opts, k, depth + 1, seen)
  end
  seen[t] = nil
  return "{" .. table.concat(out, ",") .. "}"
end

encode = function(v, opts, key, depth, seen)
  local ty = type(v)
  if ty == "string" then return string_value(v) end
  if ty == "number" then return number_value(v) end
  if ty == "boolean" then return tostring(v) end
  if ty == "table" then return table_value(v, opts, key, depth, seen) end
  return "null"
end

-- v as one line of JSON. opts.arrays: { [key] = true } for the keys whose
-- empty table is an empty array.
function M.encode(v, opts)
  return encode(v, opts or {}, nil, 0, {})
end

return M
