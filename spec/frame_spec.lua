-- Specs for DATA framing through smtp.core.framer(): line ends become CRLF,
-- leading dots are doubled, the end of data is added, and none of it may
-- depend on where the message was cut into chunks.

local core = require "smtp.core"

-- ---- framing helpers -------------------------------------------------------

-- The wire bytes for a message given as a list of chunks (writes + finish).
local function frame_chunks(chunks)
  local framer = core.framer()
  local parts = {}
  for i, chunk in ipairs(chunks) do
    local out, code, line = framer:write(chunk)
    assert(out, ("chunk %d refused: %s %s"):format(i, tostring(code), tostring(line)))
    parts[#parts + 1] = out
  end
  parts[#parts + 1] = assert(framer:finish())
  return table.concat(parts)
end

local function frame_once(body)
  return frame_chunks({ body })
end

-- The message as the server keeps it: every line end (CRLF, bare CR, bare
-- LF) a CRLF, and a last line end added when missing.
local function normalised(body)
  local text = body:gsub("\r\n", "\n")
  text = text:gsub("\r", "\n")
  text = text:gsub("\n", "\r\n")
  if text ~= "" and text:sub(-2) ~= "\r\n" then text = text .. "\r\n" end
  return text
end

-- What a server does with the wire bytes: drops the end of data, then one
-- dot from every line that starts with one.
local function unstuffed(wire)
  assert.equal(".\r\n", wire:sub(-3), "the end of data")
  local data = wire:sub(1, -4)
  return (("\n" .. data):gsub("\n%.", "\n")):sub(2)
end

local function assert_well_framed(wire, body)
  assert.is_nil(wire:find("\r[^\n]"), "a CR not followed by LF")
  assert.is_nil(wire:find("\r$"), "a CR at the very end")
  assert.is_nil(wire:find("[^\r]\n"), "an LF not preceded by CR")
  assert.is_nil(wire:find("^\n"), "an LF at the very start")
  if wire ~= ".\r\n" then
    assert.equal("\r\n.\r\n", wire:sub(-5), "ends with CRLF . CRLF")
    assert.equal(#wire - 4, wire:find("\r\n.\r\n", 1, true), "no end of data before the end")
    assert.are_not.equal(".\r\n", wire:sub(1, 3), "no end of data at the start")
  end
  assert.equal(normalised(body), unstuffed(wire), "un-stuffing gives the message back")
end

-- Every way to cut body in two, and (short bodies) in three.
local function two_piece_splits(body)
  local splits = {}
  for at = 0, #body do
    splits[#splits + 1] = { body:sub(1, at), body:sub(at + 1) }
  end
  return splits
end

local function three_piece_splits(body)
  local splits = {}
  for a = 0, #body do
    for b = a, #body do
      splits[#splits + 1] = { body:sub(1, a), body:sub(a + 1, b), body:sub(b + 1) }
    end
  end
  return splits
end

local function bytes_of(body)
  local bytes = {}
  for i = 1, #body do bytes[i] = body:sub(i, i) end
  return bytes
end

local function show(s)
  return (s:gsub("[%c]", function(c) return ("\\%d"):format(c:byte()) end))
end

-- A deterministic generator (Park-Miller), so failures reproduce; its
-- products stay exact in doubles, so it runs on every Lua.
local function prng(seed)
  local x = seed
  return function(n)
    x = x * 16807 % 2147483647
    return x % n
  end
end

-- ---- specs -----------------------------------------------------------------

-- Hostile bodies and their exact framing.
local HOSTILE = {
  { "a\nb", "a\r\nb\r\n.\r\n" },
  { "a\rb", "a\r\nb\r\n.\r\n" },
  { "a\r\r\nb", "a\r\n\r\nb\r\n.\r\n" },
  { "\n.\n", "\r\n..\r\n.\r\n" },
  { ".\r\n", "..\r\n.\r\n" },
  { "..", "...\r\n.\r\n" },
  { "x\r", "x\r\n.\r\n" },
  { "x\r\n.", "x\r\n..\r\n.\r\n" },
  { "head\r\n.\r\ntail", "head\r\n..\r\ntail\r\n.\r\n" },
  { "\n.\r\n", "\r\n..\r\n.\r\n" },
  { "\r.\r", "\r\n..\r\n.\r\n" },
  { ".", "..\r\n.\r\n" },
  { "a\n.\nb\n.", "a\r\n..\r\nb\r\n..\r\n.\r\n" },
  { "no newline at the end", "no newline at the end\r\n.\r\n" },
  { "", ".\r\n" },
  { "\r\n", "\r\n.\r\n" },
  { "\n\r", "\r\n\r\n.\r\n" },
  { "\r\r", "\r\n\r\n.\r\n" },
  { "line\r\n", "line\r\n.\r\n" },
  { "a\0b\r\0\n.\0", "a\0b\r\n\0\r\n..\0\r\n.\r\n" },
  { "\0\r\n.\r\n\0", "\0\r\n..\r\n\0\r\n.\r\n" },
}

describe("framer", function()
  describe("hostile bodies", function()
    for _, case in ipairs(HOSTILE) do
      local body, wire = case[1], case[2]
      local name = '"' .. show(body) .. '"'

      it("frames " .. name .. " exactly", function()
        assert.equal(wire, frame_once(body))
        assert_well_framed(wire, body)
      end)

      it("frames " .. name .. " the same at every split", function()
        for _, chunks in ipairs(two_piece_splits(body)) do
          assert.equal(wire, frame_chunks(chunks), "split " .. show(chunks[1]) .. " | " .. show(chunks[2]))
        end
        for _, chunks in ipairs(three_piece_splits(body)) do
          assert.equal(wire, frame_chunks(chunks), "split in three")
        end
        assert.equal(wire, frame_chunks(bytes_of(body)), "byte by byte")
      end)
    end
  end)

  it("puts a lone dot line out as two dots wherever it is", function()
    for _, body in ipairs({ ".\n", "a\n.\nb", "a\r\n.", "\r\n.\r\n" }) do
      local wire = frame_once(body)
      assert.truthy(wire:find("..\r\n", 1, true), show(body))
      assert_well_framed(wire, body)
    end
  end)

  it("writes nothing of a write it refuses and goes on as before", function()
    local framer = core.framer()
    assert.equal("ab", framer:write("ab"))
    assert.same({ nil, "line", "message line 2 is longer than 998 octets" }, { framer:write("\n" .. ("x"):rep(999)) })
    assert.equal("c", framer:write("c"))
    assert.equal("\r\n.\r\n", framer:finish())
  end)

  it("is reusable after finish", function()
    local framer = core.framer()
    assert.equal("..", framer:write("."))
    assert.equal("\r\n.\r\n", framer:finish())
    assert.equal("..x", framer:write(".x"))
    assert.equal("\r\n.\r\n", framer:finish())
  end)

  describe("line length", function()
    local LONGEST = ("x"):rep(998)
    local TOO_LONG = ("x"):rep(999)

    it("passes a line of 998 octets", function()
      assert.equal(LONGEST .. "\r\n.\r\n", frame_once(LONGEST))
      assert.equal(LONGEST .. "\r\n.\r\n", frame_once(LONGEST .. "\r\n"))
      assert.is_true(core.framer():check(LONGEST))
    end)

    it("refuses a line of 999 octets with its line number", function()
      assert.same({ nil, "line", "message line 1 is longer than 998 octets" }, { core.framer():write(TOO_LONG) })
      assert.same({ nil, "line", "message line 1 is longer than 998 octets" },
        { core.framer():check(TOO_LONG) })
      local after_two = "first\nsecond\r\n" .. TOO_LONG
      assert.same({ nil, "line", "message line 3 is longer than 998 octets" }, { core.framer():write(after_two) })
      assert.same({ nil, "line", "message line 3 is longer than 998 octets" },
        { core.framer():check(after_two) })
    end)

    it("does not count a stuffed dot", function()
      local dotted = "." .. ("x"):rep(997)
      assert.equal("." .. dotted .. "\r\n.\r\n", frame_once(dotted))
    end)

    it("counts a line across chunk boundaries", function()
      local body = "ok\r\n" .. TOO_LONG
      for at = 0, #body - 1 do
        for _, method in ipairs({ "write", "check" }) do
          local framer = core.framer()
          local first = framer[method](framer, body:sub(1, at))
          local second, code, line = framer[method](framer, body:sub(at + 1))
          assert.truthy(first, method .. " split at " .. at)
          assert.same({ nil, "line", "message line 2 is longer than 998 octets" },
            { second, code, line }, method .. " split at " .. at)
        end
      end
    end)

    it("passes 998-octet lines at every split, line ends not counted", function()
      for _, sep in ipairs({ "\r\n", "\n", "\r" }) do
        local body = LONGEST .. sep .. LONGEST .. sep .. LONGEST
        local wire = LONGEST .. "\r\n" .. LONGEST .. "\r\n" .. LONGEST .. "\r\n.\r\n"
        for at = 990, 1010 do
          assert.equal(wire, frame_chunks({ body:sub(1, at), body:sub(at + 1) }), "split at " .. at)
          local checker = core.framer()
          assert.is_true(checker:check(body:sub(1, at)))
          assert.is_true(checker:check(body:sub(at + 1)))
        end
      end
    end)

    it("takes another limit, or none", function()
      assert.same({ nil, "line", "message line 1 is longer than 10 octets" },
        { core.framer(10):write(("y"):rep(11)) })
      local ten = core.framer(10)
      assert.equal(("y"):rep(10), ten:write(("y"):rep(10)))
      assert.equal("\r\n.\r\n", ten:finish())
      local unlimited = core.framer(0)
      assert.equal(("z"):rep(5000), unlimited:write(("z"):rep(5000)))
    end)
  end)

  it("frames a big random body the same in random chunks", function()
    local random = prng(20240607)
    local alphabet = { "\r", "\n", "\r\n", ".", ".", "\0", " ", "\t", "\255" }
    local pieces = {}
    for i = 1, 60000 do
      local r = random(20)
      if r < #alphabet then
        pieces[i] = alphabet[r + 1]
      else
        pieces[i] = string.char(97 + random(26))
      end
    end
    local body = table.concat(pieces)
    local one_shot = frame_once(body)
    assert_well_framed(one_shot, body)
    for round = 1, 5 do
      local chunks, at = {}, 1
      while at <= #body do
        local n = random(round * 700)
        chunks[#chunks + 1] = body:sub(at, at + n - 1)
        at = at + n
      end
      assert.equal(one_shot, frame_chunks(chunks), "round " .. round)
    end
  end)

  it("core.inspect: the size after CRLF normalisation and the 8-bit flags, on random input", function()
    local alphabet = { "a", "b", "\r", "\n", "\r\n", ".", "\200", "\255", "x" }
    local seed = 7
    local function rand(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n + 1
    end
    for round = 1, 400 do
      local parts = {}
      for _ = 1, rand(40) - 1 do parts[#parts + 1] = alphabet[rand(#alphabet)] end
      local raw = table.concat(parts)
      local ok, eightbit, head8, size = core.inspect(raw)
      assert.is_true(ok)
      -- the size on the wire: every line end a CRLF, one added when missing
      local want = #normalised(raw)
      if raw == "" then want = 0 end
      assert.equal(want, size, "round " .. round .. ": " .. string.format("%q", raw))
      assert.equal(raw:find("[\128-\255]") ~= nil, eightbit, "round " .. round)
      local head = raw:match("^(.-\n)\r?\n") or raw
      if eightbit then
        assert.equal(head:find("[\128-\255]") ~= nil, head8, "round " .. round)
      end
    end
  end)
end)
