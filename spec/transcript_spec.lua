-- Byte-exact transcripts. A fixture in spec/fixtures/*.txt is made of lines
--   S: text    the server sends text CRLF
--   C: text    the client must send exactly text CRLF ("C:" alone: an empty line)
-- ('#' lines and blank lines are comments). The same file is the fake
-- server's script (C lines are read one by one and must match exactly, the
-- message body included) and the bytes expected from the client.
local smtp = require "smtp"
local servers = require "spec.support.servers"

local FIXTURES = servers.root .. "/spec/fixtures/"
local DATE = "Thu, 01 Jan 2026 12:00:00 +0000"

-- A Lua pattern matching exactly this line.
local exact = servers.exact

-- Reads a fixture: the fake server's steps, the client's exact bytes, and
-- the message as the client framed it (the C lines after the 354).
local function load_fixture(name)
  local path = FIXTURES .. name .. ".txt"
  local f = assert(io.open(path, "rb"))
  local src = f:read("*a")
  f:close()
  local steps, client, out = {}, {}, {}
  local body, in_body, saw_354 = {}, false, false
  local function flush()
    if #out > 0 then
      steps[#steps + 1] = { send = table.concat(out) }
      out = {}
    end
  end
  local n = 0
  for line in src:gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("\r", 1, true) then error(path .. ":" .. n .. ": CR in a fixture line") end
    if line ~= "" and not line:match("^#") then
      local who, text = line:match("^([SC]):(.*)$")
      if not who then error(path .. ":" .. n .. ": not an S: or C: line: " .. line) end
      if text ~= "" then
        if text:sub(1, 1) ~= " " then error(path .. ":" .. n .. ": no space after " .. who .. ":") end
        text = text:sub(2)
      end
      if who == "S" then
        out[#out + 1] = text .. "\r\n"
        if text:match("^354") then saw_354 = true end
      else
        flush()
        steps[#steps + 1] = { expect = exact(text) }
        client[#client + 1] = text .. "\r\n"
        if saw_354 and not in_body and #body == 0 then in_body = true end
        if in_body then
          if text == "." then
            in_body = false
            saw_354 = false
          else
            body[#body + 1] = text .. "\r\n"
          end
        end
      end
    end
  end
  flush()
  return steps, table.concat(client), table.concat(body)
end

-- The message as the server gets it, without the transparency dots.
local function unstuff(framed)
  return (("\n" .. framed):gsub("\n%.", "\n"):sub(2))
end

local cases = {
  {
    name = "basic_pipelined",
    opts = { from = "Alice Example <alice@example.org>",
             to = { "bob@example.net", "Carol <carol@example.net>" },
             subject = "Hello", text = "Hello Bob and Carol.\n",
             message_id = "<basic.1@example.org>" },
    check = function(res)
      assert.same({ "bob@example.net", "carol@example.net" }, res.accepted)
      assert.same({}, res.refused)
      assert.equal(250, res.code)
      assert.equal("2.0.0", res.enhanced)
      assert.equal("Ok: queued as 4F2A1", res.message)  -- the code is in enhanced
    end,
  },
  {
    name = "sequential",
    opts = { from = "alice@example.org", to = "bob@example.net", subject = "One at a time",
             text = "First line.\nSecond line.\n", message_id = "<sequential.1@example.org>" },
    check = function(res)
      assert.same({ "bob@example.net" }, res.accepted)
      assert.equal(250, res.code)
    end,
  },
  {
    name = "helo_fallback",
    opts = { from = "alice@example.org", to = "bob@example.net", subject = "Old school",
             text = "Hi.\n", message_id = "<helo.1@example.org>" },
    check = function(res)
      assert.same({ "bob@example.net" }, res.accepted)
      assert.equal(250, res.code)
      assert.is_nil(res.enhanced)
    end,
  },
  {
    name = "refused_recipient",
    opts = { from = "alice@example.org",
             to = { "bob@example.net", "nobody@example.net", "carol@example.net" },
             subject = "Partly delivered", text = "Two out of three.\n",
             message_id = "<refused.1@example.org>" },
    check = function(res)
      assert.same({ "bob@example.net", "carol@example.net" }, res.accepted)
      local r = res.refused["nobody@example.net"]
      assert.is_table(r)
      assert.equal(550, r.code)
      assert.equal("5.1.1", r.enhanced)
      assert.matches("User unknown", r.message, 1, true)
      assert.is_nil(res.refused["bob@example.net"])
      assert.equal("Ok: queued as 7C3B9", res.message)
    end,
  },
  {
    name = "dot_stuffing",
    opts = { from = "alice@example.org", to = "bob@example.net", subject = "dots",
             text = ".hidden\nnormal\n..two\n.\nend", message_id = "<dots.1@example.org>" },
    check = function(res)
      assert.equal(250, res.code)
    end,
  },
  {
    name = "encoded_subject",
    opts = { from = "alice@example.org", to = "bob@example.net",
             subject = "Grüße aus Köln – schöne Grüße an alle, die diese lange Betreffzeile lesen",
             text = "Plain body.\n", message_id = "<subject.1@example.org>" },
    check = function(res)
      assert.equal(250, res.code)
    end,
  },
}

describe("byte-exact transcripts #socket", function()
  after_each(function()
    servers.stop_all()
  end)

  for _, case in ipairs(cases) do
    it(case.name, function()
      local steps, expected, framed = load_fixture(case.name)
      assert.is_true(#framed > 0, "fixture has no message")
      local srv = servers.fake{ steps = steps, timeout = 8 }
      local opts = { host = "127.0.0.1", port = srv.port, timeout = 2, helo = "client.test",
                     date = DATE }
      for k, v in pairs(case.opts) do opts[k] = v end
      local res, err = smtp.send(opts)
      assert.is_true(srv:wait(5), "fake server still running")
      local log = srv:errors()
      assert.equal(expected, srv:received())
      assert.is_nil(log:find("MISMATCH", 1, true), log)
      assert.is_table(res, err)
      assert.equal(case.opts.message_id, res.message_id)
      case.check(res)
      -- The fixture's message is what smtp.message builds, framed.
      local built = assert(smtp.message(opts)):tostring()
      assert.equal(built, unstuff(framed))
      -- SIZE=, where sent, is the exact size of that message.
      local size = expected:match("\r\nMAIL FROM:<[^>]*> SIZE=(%d+)\r\n")
      if size then assert.equal(#built, tonumber(size)) end
    end)
  end

  it("every line of every fixture is a valid SMTP line", function()
    for _, case in ipairs(cases) do
      local _, expected = load_fixture(case.name)
      for line in expected:gmatch("([^\n]*)\n") do
        assert.equal("\r", line:sub(-1), case.name .. ": line without CRLF")
        assert.is_true(#line - 1 <= 998, case.name .. ": line over 998 octets")
        assert.is_nil(line:sub(1, -2):find("[%z\r\n]"), case.name .. ": control byte in a line")
      end
    end
  end)

  it("a fixture that disagrees with the client is caught", function()
    -- The loader's own check: one wrong C line and the send must fail.
    local steps, expected = load_fixture("sequential")
    for i, st in ipairs(steps) do
      if st.expect == exact("Subject: One at a time") then
        steps[i] = { expect = exact("Subject: One at a Time") }
      end
    end
    local srv = servers.fake{ steps = steps, timeout = 8 }
    local res = smtp.send{ host = "127.0.0.1", port = srv.port, timeout = 2, helo = "client.test",
                           date = DATE, from = "alice@example.org", to = "bob@example.net",
                           subject = "One at a time", text = "First line.\nSecond line.\n",
                           message_id = "<sequential.1@example.org>" }
    assert.is_nil(res)
    assert.is_true(srv:wait(5))
    assert.matches("MISMATCH: Subject: One at a time", srv:errors(), 1, true)
    assert.is_true(#srv:received() < #expected)
  end)

  it("debug = 2 shows the engine's state transitions; debug = 1 does not", function()
    local function run(level)
      local steps = load_fixture("sequential")
      local srv = servers.fake{ steps = steps, timeout = 8 }
      local lines, real = {}, io.stderr
      io.stderr = { write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end } -- luacheck: ignore 122
      local ok, res = pcall(smtp.send, { host = "127.0.0.1", port = srv.port, timeout = 2,
        helo = "client.test", date = DATE, from = "alice@example.org", to = "bob@example.net",
        subject = "One at a time", text = "First line.\nSecond line.\n",
        message_id = "<sequential.1@example.org>", debug = level })
      io.stderr = real -- luacheck: ignore 122
      assert.is_true(ok, res)
      assert.is_table(res)
      assert.is_true(srv:wait(5))
      return table.concat(lines)
    end
    local two = run(2)
    assert.truthy(two:find(" state: connected/hello -> greeted/hello\n", 1, true), two)
    assert.truthy(two:find(" state: ready/transaction -> ready/body\n", 1, true), two)
    assert.truthy(two:find(" state: ready/quit -> closed/quit\n", 1, true), two)
    local one = run(1)
    assert.truthy(one:find("send: ", 1, true), one)
    assert.falsy(one:find("state: ", 1, true), one)
  end)
end)
