-- A 20 MB message through the private Postfix (spec/support/postfix.lua,
-- which offers PIPELINING and CHUNKING; message_size_limit raised to 64 MB
-- here), read back from its delivery file and compared byte for byte.
--
-- The message is made deterministically: lines of 0 to 991 octets (always
-- under 998), some starting with ".", some "..", some exactly ".", some
-- empty, and about one line in sixteen ending in a bare LF instead of CRLF.
-- What we expect on the wire is that message with every line end made CRLF.
-- What Postfix documentedly changes, and the only normalisation done before
-- comparing: smtpd stores lines without their CRLF and pipe(8) hands the
-- message to the delivery script with LF line ends, and Postfix puts its own
-- Received: header on top (pf:messages() gives the file without it as
-- `content`).  So content must equal the expected message with CRLF -> LF,
-- exactly: no dot left doubled or dropped, no line joined, split or lost.
--
-- Each source (a string, an open file, a function returning 64 KB pieces)
-- goes over three paths: CHUNKING + PIPELINING (the default),
-- chunking = false (DATA) and pipelining = false (CHUNKING alone); the
-- transcript must show BDAT and no DATA on the CHUNKING paths, DATA and no
-- BDAT on the other.
--
-- Tags: #postfix #chunking; the 20 MB run also #timing: nine 20 MB
-- transfers with timeouts sized for native speed, which the valgrind run
-- (it leaves #timing out) could not fit in its budget; the same specs with
-- a 2 MB message run there instead.
local smtp = require "smtp"
local postfix = require "spec.support.postfix"

local FROM, TO = "sender@example.org", "big@example.net"
local SIZE = 20 * 1024 * 1024
local PIECE = 64 * 1024

-- The raw message (some bare LF line ends), deterministic.
local function make_message(size)
  local text = {}
  local words = { "lorem", "ipsum", "dolor", "sit", "amet,", "consectetur", "adipiscing", "elit;", "sed",
                  "do", "eiusmod", "tempor", "FROM", "From", ">From", "DATA", "BDAT", "=3D", "\t", "x" }
  -- Park-Miller: exact in doubles too (Lua 5.1, LuaJIT)
  local seed = 20240601
  local function rand(n)
    seed = (seed * 16807) % 2147483647
    return math.floor(seed / 64) % n
  end
  local len = 0
  while len < 8192 do
    local w = words[rand(#words) + 1]
    text[#text + 1] = w
    len = len + #w + 1
  end
  local base = table.concat(text, " ")   -- no CR, no LF

  local out = {
    "From: Sender <" .. FROM .. ">\r\n",
    "To: <" .. TO .. ">\r\n",
    "Subject: a 20 MB message\r\n",
    "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n",
    "Message-ID: <big.20mb@lua-smtp.test>\r\n",
    "MIME-Version: 1.0\r\n",
    "Content-Type: text/plain; charset=us-ascii\r\n",
    "\r\n",
  }
  local n = 0
  for _, s in ipairs(out) do n = n + #s end
  local stats = { dot = 0, lone_dot = 0, bare_lf = 0, lines = 0 }
  while n < size do
    local kind = rand(16)
    local line
    if kind == 0 then
      local from = rand(4096) + 1
      line = "." .. base:sub(from, from + rand(990) - 1)
      stats.dot = stats.dot + 1
    elseif kind == 1 then
      line = "."
      stats.lone_dot = stats.lone_dot + 1
    elseif kind == 2 then
      line = ".." .. base:sub(1, rand(300))
      stats.dot = stats.dot + 1
    elseif kind == 3 then
      line = ""
    else
      local from = rand(4096) + 1
      line = base:sub(from, from + rand(990) - 1)
    end
    assert(#line < 998)
    local eol = "\r\n"
    if rand(16) == 0 then
      eol = "\n"
      stats.bare_lf = stats.bare_lf + 1
    end
    out[#out + 1] = line .. eol
    n = n + #line + #eol
    stats.lines = stats.lines + 1
  end
  out[#out + 1] = "the end\r\n"
  return table.concat(out), stats
end

-- The first difference between two long strings, readable.
local function first_difference(got, want)
  if got == want then return nil end
  local i, step = 1, 65536
  while i <= #want and got:sub(i, i + step - 1) == want:sub(i, i + step - 1) do i = i + step end
  while i <= #want and got:sub(i, i) == want:sub(i, i) do i = i + 1 end
  local from = math.max(1, i - 60)
  return string.format("lengths: got %d, want %d; first difference at octet %d\n got: %q\nwant: %q",
    #got, #want, i, got:sub(from, i + 60), want:sub(from, i + 60))
end

local function why(err, info)
  if not info then return tostring(err) end
  return string.format("%s (kind=%s stage=%s code=%s)", tostring(err), tostring(info.kind),
    tostring(info.stage), tostring(info.code))
end

-- A command other than DATA and BDAT as the transcript shows it ('EHLO ...\r\n').
local COMMANDS = { EHLO = true, HELO = true, LHLO = true, MAIL = true, RCPT = true,
                   QUIT = true, RSET = true, NOOP = true, STARTTLS = true, AUTH = true }
local function is_command(text)
  local verb = text:match("^'(%u+)[ \\]")
  return verb ~= nil and COMMANDS[verb] == true
end

local PATHS = {
  { name = "CHUNKING + PIPELINING (default)", verb = "BDAT" },
  { name = "chunking = false (DATA)", chunking = false, verb = "DATA" },
  { name = "pipelining = false (CHUNKING alone)", pipelining = false, verb = "BDAT" },
}

-- Two sizes.  20 MB is tagged #timing: its timeouts are sized for native
-- speed, and nine 20 MB transfers do not fit the valgrind run's budget
-- (scripts/valgrind.sh leaves #timing out).  2 MB is not, so that the
-- valgrind run too sends through Postfix on every path and from every
-- source (before, it ran 0 tests of this file).
local RUNS = {
  { size = SIZE, title = "a 20 MB message through Postfix #postfix #chunking #timing" },
  { size = 2 * 1024 * 1024, title = "a 2 MB message through Postfix #postfix #chunking" },
}

for _, run in ipairs(RUNS) do
  describe(run.title, function()
    local pf, skip, raw, wire_lf, file, stats

    setup(function()
      if not postfix.available() then
        skip = "postfix or dovecot missing, or not root"
        return
      end
      raw, stats = make_message(run.size)
      -- the wire form has CRLF everywhere; Postfix delivers it with LF
      wire_lf = raw:gsub("\r\n", "\n")
      assert(not wire_lf:find("\r", 1, true))
      pf = postfix.start{ main = { message_size_limit = 64 * 1024 * 1024 } }
      file = pf.dir .. "/big.eml"
      local f = assert(io.open(file, "wb"))
      assert(f:write(raw))
      f:close()
    end)

    teardown(function()
      if pf then pf:stop() end
      pf = nil
      postfix.stop_all()
    end)

    before_each(function()
      if pf then pf:clear() end
    end)

    it("the message has what it should (deterministic, hostile lines)", function()
      if skip then pending(skip) return end
      assert.is_true(#raw >= run.size)
      assert.is_true(stats.dot > 100 and stats.lone_dot > 100 and stats.bare_lf > 100, stats.dot .. " "
        .. stats.lone_dot .. " " .. stats.bare_lf)
      for line in raw:gmatch("([^\n]*)\n") do
        assert(#line <= 998, "line too long")
      end
      -- a lone "." after a bare LF: the case a framer that only looks for CRLF gets wrong
      assert.truthy(raw:find("[^\r]\n%.\r?\n"))
    end)

    local SOURCES = {
      { name = "a string", make = function() return raw end },
      { name = "an open file", make = function() return assert(io.open(file, "rb")) end },
      { name = "a function returning 64 KB pieces", make = function()
        local i = 1
        return function()
          if i > #raw then return nil end
          local piece = raw:sub(i, i + PIECE - 1)
          i = i + PIECE
          return piece
        end
      end },
    }

    for _, src in ipairs(SOURCES) do
      for _, path in ipairs(PATHS) do
        it(src.name .. ", " .. path.name .. ": delivered byte for byte", function()
          if skip then pending(skip) return end
          local sent, strays = {}, 0
          local message = src.make()
          local res, err, info = smtp.send{
            host = "127.0.0.1", port = pf.ports.plain, tls = "none", helo = "client.test", timeout = 30,
            deadline = 120, chunking = path.chunking, pipelining = path.pipelining,
            envelope = { from = FROM, to = { TO } }, message = message,
            debug = function(kind, text)
              if kind == "send" and text:sub(1, 1) == "'" then
                if text:find("^'BDAT %d+\\r\\n'$") or text:find("^'BDAT %d+ LAST\\r\\n'$")
                  or text == "'DATA\\r\\n'" then
                  sent[#sent + 1] = text
                elseif not is_command(text) then
                  strays = strays + 1
                end
              end
            end,
          }
          if io.type(message) == "file" then pcall(message.close, message) end
          assert.is_table(res, why(err, info))
          assert.same({ TO }, res.accepted)
          assert.equal(250, res.code)

          local got = pf:messages(1, 60)
          assert.equal(1, #got)
          assert.equal(FROM, got[1].sender)
          assert.equal(TO, got[1].recipient)
          local diff = first_difference(got[1].content, wire_lf)
          assert.is_nil(diff, diff)

          local bdat, last, data = 0, 0, 0
          for _, l in ipairs(sent) do
            if l:find("^'BDAT %d+") then bdat = bdat + 1 end
            if l:find("^'BDAT %d+ LAST") then last = last + 1 end
            if l == "'DATA\\r\\n'" then data = data + 1 end
          end
          -- every command once: BDAT chunks, exactly one of them LAST, no DATA
          -- (or DATA once and no BDAT); the message itself only as data
          -- (b'...'), never as command lines
          local seen = string.format("transcript: %d BDAT (%d with LAST), %d DATA, %d other lines of the"
            .. " message shown as commands", bdat, last, data, strays)
          if path.verb == "BDAT" then
            assert.is_true(bdat >= 1 and last == 1 and data == 0 and strays == 0, seen)
          else
            assert.is_true(bdat == 0 and data == 1 and strays == 0, seen)
          end
        end)
      end
    end
  end)
end
