-- smtp.send / smtp.connect against Postfix's smtp-sink (a real, fast SMTP
-- implementation): ordinary sends, pipelining, long sessions, the dump of
-- what the server received, and the refusals and disconnects its flags make.
local smtp = require "smtp"
local servers = require "spec.support.servers"
local util = require "spec.support.util"

local FROM, TO, TO2 = "sender@example.org", "rcpt@example.net", "other@example.net"

-- A transcript collector for the `debug` option: events in order.
local function recorder()
  local events = {}
  local function trace(kind, text) events[#events + 1] = { kind = kind, text = text } end
  return events, trace
end

-- The command lines the client sent, from a transcript ("send" events
-- whose text is a repr of one command line: 'MAIL FROM:<...>\r\n').
local function commands(events)
  local out = {}
  for _, ev in ipairs(events) do
    if ev.kind == "send" then
      local line = ev.text:match("^'(.*)\\r\\n'$")
      if line then out[#out + 1] = line end
    end
  end
  return out
end

-- The kinds of the events after EHLO was answered, reduced to the order of
-- commands ("C:MAIL") and final reply lines ("R"), up to the end of data.
local function exchange_order(events)
  local out, started = {}, false
  for _, ev in ipairs(events) do
    if ev.kind == "send" then
      local verb = ev.text:match("^'(%u+)")
      if verb == "MAIL" then started = true end
      if started and verb then out[#out + 1] = "C:" .. verb end
      if started and ev.text:match("^b'") then break end  -- the body
    elseif started and ev.kind == "reply" and ev.text:match("^retcode") then
      out[#out + 1] = "R"
    end
  end
  return table.concat(out, " ")
end

local function base(port, extra)
  local o = { host = "127.0.0.1", port = port, timeout = 2, helo = "client.test",
              from = FROM, to = TO, subject = "sink test", text = "hello sink\n" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local list_dir, read_all = util.list_dir, util.read_file

-- A fresh directory smtp-sink can write to even after dropping to nobody.
local function dump_dir()
  local dir = util.mkdtemp("lua-smtp-sink")
  assert(util.execute("chmod 1777 " .. util.shell_quote(dir)))
  return dir
end

-- Waits (at most 3 s) until the dump directory holds n complete files.
local function wait_dumps(dir, n)
  local socket = require "socket"
  local deadline = socket.gettime() + 3
  while true do
    local names = list_dir(dir)
    local complete = 0
    for _, name in ipairs(names) do
      local s = read_all(dir .. "/" .. name)
      if s and s:sub(-2) == "\n\n" then complete = complete + 1 end
    end
    if complete >= n or socket.gettime() > deadline then return names end
    socket.sleep(0.02)
  end
end

-- Splits a dump file into smtp-sink's own records and the message.
local function parse_dump(s)
  local meta, msg = s:match("^(.-\nReceived: [^\n]*\n\t[^\n]*\n\t[^\n]*\n)(.*)\n$")
  return meta, msg
end

describe("smtp against Postfix smtp-sink #sink", function()
  local dirs = {}

  after_each(function()
    servers.stop_all()
    for _, d in ipairs(dirs) do util.remove_tree(d) end
    dirs = {}
  end)

  -- The server, or nil (and the spec marked pending) without smtp-sink.
  local function sink(flags)
    if not servers.available.sink then
      pending("smtp-sink is not installed")
      return nil
    end
    return servers.sink(flags)
  end

  it("sends a message and reports every recipient accepted", function()
    local srv = sink{}
    if not srv then return end
    local res, err, info = smtp.send(base(srv.port, { to = { TO, TO2 } }))
    assert.is_table(res, err)
    assert.is_nil(info)
    assert.same({ TO, TO2 }, res.accepted)
    assert.same({}, res.refused)
    assert.equal(250, res.code)
    assert.equal("2.0.0", res.enhanced)
    assert.is_string(res.message_id)
  end)

  it("pipelines MAIL, RCPT and DATA, without SIZE, since smtp-sink offers PIPELINING only", function()
    local srv = sink{}
    if not srv then return end
    local events, trace = recorder()
    local s, cerr = smtp.connect{ host = "127.0.0.1", port = srv.port, timeout = 2,
                                  helo = "client.test", debug = trace }
    assert.is_table(s, cerr)
    assert.truthy(s.capabilities.PIPELINING)
    assert.is_nil(s.capabilities.SIZE)
    local res, err = s:send(base(srv.port, { to = { TO, TO2 } }))
    assert.is_table(res, err)
    assert.is_true(s:quit())
    local cmds = commands(events)
    assert.same({ "EHLO client.test", "MAIL FROM:<" .. FROM .. ">", "RCPT TO:<" .. TO .. ">",
                  "RCPT TO:<" .. TO2 .. ">", "DATA", "QUIT" }, cmds)
    -- All four commands go out before the first reply comes back.
    assert.equal("C:MAIL C:RCPT C:RCPT C:DATA R R R R", exchange_order(events))
  end)

  it("waits for each reply when smtp-sink does not offer PIPELINING (-p)", function()
    local srv = sink{ "-p" }
    if not srv then return end
    local events, trace = recorder()
    local res, err = smtp.send(base(srv.port, { to = { TO, TO2 }, debug = trace }))
    assert.is_table(res, err)
    assert.equal("C:MAIL R C:RCPT R C:RCPT R C:DATA R", exchange_order(events))
  end)

  it("does not pipeline with pipelining = false", function()
    local srv = sink{}
    if not srv then return end
    local events, trace = recorder()
    local res, err = smtp.send(base(srv.port, { debug = trace, pipelining = false }))
    assert.is_table(res, err)
    assert.equal("C:MAIL R C:RCPT R C:DATA R", exchange_order(events))
  end)

  it("sends 20 messages in one session", function()
    local dir = dump_dir()
    dirs[#dirs + 1] = dir
    local srv = sink{ "-d", dir .. "/%M." }
    if not srv then return end
    local events, trace = recorder()
    local s, cerr = smtp.connect{ host = "127.0.0.1", port = srv.port, timeout = 2,
                                  helo = "client.test", debug = trace }
    assert.is_table(s, cerr)
    local ids = {}
    for i = 1, 20 do
      local res, err = s:send(base(srv.port, { subject = "message " .. i, text = "body " .. i .. "\n" }))
      assert.is_table(res, "message " .. i .. ": " .. tostring(err))
      assert.equal(250, res.code)
      assert.same({ TO }, res.accepted)
      assert.is_nil(ids[res.message_id])
      ids[res.message_id] = true
    end
    assert.is_true(s:quit())
    -- One connection, one greeting, one EHLO, twenty MAILs.
    local n_ehlo, n_mail = 0, 0
    for _, c in ipairs(commands(events)) do
      if c:match("^EHLO ") then n_ehlo = n_ehlo + 1 end
      if c:match("^MAIL ") then n_mail = n_mail + 1 end
    end
    assert.equal(1, n_ehlo)
    assert.equal(20, n_mail)
    local names = wait_dumps(dir, 20)
    assert.equal(20, #names)
    local seen = {}
    for _, name in ipairs(names) do
      local _, msg = parse_dump(assert(read_all(dir .. "/" .. name)))
      assert.is_string(msg)
      local n = tonumber(msg:match("\nSubject: message (%d+)\n"))
      assert.is_number(n)
      assert.matches("\n\nbody " .. n .. "\n$", msg)
      seen[n] = true
    end
    for i = 1, 20 do assert.is_true(seen[i], "message " .. i .. " missing from the dump") end
  end)

  it("delivers exactly the message, dot-unstuffed, to smtp-sink's dump", function()
    local dir = dump_dir()
    dirs[#dirs + 1] = dir
    local srv = sink{ "-d", dir .. "/%M." }
    if not srv then return end
    -- lines within 78 characters, so the body goes 7bit and its dots are stuffed on the wire
    local text = "first line\n.\n.leading dot\n..two dots\n\n" .. string.rep("long ", 15) .. "\nlast"
    local spec = base(srv.port, { to = { TO, TO2 }, text = text, date = "Thu, 01 Jan 2026 00:00:00 +0000",
                                  message_id = "<sink.dump@example.org>" })
    local res, err = smtp.send(spec)
    assert.is_table(res, err)
    local names = wait_dumps(dir, 1)
    assert.equal(1, #names)
    local meta, msg = parse_dump(assert(read_all(dir .. "/" .. names[1])))
    assert.is_string(meta, "unexpected dump format")
    assert.matches("\nX%-Helo%-Args: client%.test\n", meta)
    -- No SIZE= (not offered), nothing but the path.
    assert.matches("\nX%-Mail%-Args: <sender@example%.org>\n", meta)
    assert.matches("\nX%-Rcpt%-Args: <rcpt@example%.net>\nX%-Rcpt%-Args: <other@example%.net>\n", meta)
    local sent = assert(smtp.message(spec)):tostring()
    assert.equal(sent:gsub("\r\n", "\n"), msg)
    -- the body lines, unstuffed
    assert.matches("\n\nfirst line\n%.\n%.leading dot\n%.%.two dots\n\n", msg)
  end)

  describe("refusals", function()
    it("-f rcpt: every recipient hard-refused -> recipients, permanent, no DATA", function()
      local srv = sink{ "-f", "rcpt" }
      if not srv then return end
      local events, trace = recorder()
      local res, err, info = smtp.send(base(srv.port, { to = { TO, TO2 }, debug = trace }))
      assert.is_nil(res)
      assert.equal("recipients", info.kind, err)
      assert.is_false(info.temporary)
      assert.equal("rcpt", info.stage)
      assert.equal(500, info.refused[TO].code)
      assert.equal(500, info.refused[TO2].code)
      assert.equal("5.3.0", info.refused[TO].enhanced)
      assert.same({ "EHLO client.test", "MAIL FROM:<" .. FROM .. ">", "RCPT TO:<" .. TO .. ">",
                    "RCPT TO:<" .. TO2 .. ">", "QUIT" }, commands(events))
    end)

    it("-r rcpt: every recipient soft-refused -> recipients, temporary", function()
      local srv = sink{ "-r", "rcpt" }
      if not srv then return end
      local res, err, info = smtp.send(base(srv.port))
      assert.is_nil(res)
      assert.equal("recipients", info.kind, err)
      assert.is_true(info.temporary)
      assert.equal(450, info.refused[TO].code)
      assert.equal(450, info.code)
    end)

    it("-f mail -> sender, permanent", function()
      local srv = sink{ "-f", "mail" }
      if not srv then return end
      local res, err, info = smtp.send(base(srv.port))
      assert.is_nil(res)
      assert.equal("sender", info.kind, err)
      assert.equal(500, info.code)
      assert.is_false(info.temporary)
      assert.equal("mail", info.stage)
    end)

    it("-r . -> data at data_end, temporary", function()
      local srv = sink{ "-r", "." }
      if not srv then return end
      local res, err, info = smtp.send(base(srv.port))
      assert.is_nil(res)
      assert.equal("data", info.kind, err)
      assert.equal(450, info.code)
      assert.is_true(info.temporary)
      assert.equal("data_end", info.stage)
    end)

    it("-f ehlo -> falls back to HELO and sends", function()
      local srv = sink{ "-f", "ehlo" }
      if not srv then return end
      local events, trace = recorder()
      local res, err = smtp.send(base(srv.port, { debug = trace }))
      assert.is_table(res, err)
      local cmds = commands(events)
      assert.equal("EHLO client.test", cmds[1])
      assert.equal("HELO client.test", cmds[2])
    end)
  end)

  describe("disconnects", function()
    local cases = {
      { flag = "-q", cmd = "ehlo", kind = "closed", stage = "hello" },
      { flag = "-q", cmd = "data", kind = "closed", stage = "data" },
      { flag = "-q", cmd = ".", kind = "closed", stage = "data_end" },
      { flag = "-Q", cmd = "mail", kind = "closed", stage = "mail", code = 421 },
      { flag = "-Q", cmd = "rcpt", kind = "closed", stage = "rcpt", code = 421 },
    }
    for _, c in ipairs(cases) do
      it(c.flag .. " " .. c.cmd .. " -> " .. c.kind .. " at " .. c.stage .. ", temporary", function()
        local srv = sink{ c.flag, c.cmd }
        if not srv then return end
        local res, err, info = smtp.send(base(srv.port))
        assert.is_nil(res)
        assert.equal(c.kind, info.kind, err)
        assert.is_true(info.temporary)
        assert.equal(c.stage, info.stage, err)
        assert.equal(c.code, info.code)
        if c.stage == "data_end" then assert.matches("may or may not", err, 1, true) end
      end)
    end
  end)
end)
