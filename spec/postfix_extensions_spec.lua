-- ESMTP extensions against a real Postfix (the harness's private instance,
-- which offers PIPELINING, CHUNKING, SIZE, DSN, SMTPUTF8, 8BITMIME and
-- ENHANCEDSTATUSCODES): what it offers is used, and what arrives is read
-- back from its delivery files. Tags: #postfix (pending without it).
local smtp = require "smtp"
local postfix = require "spec.support.postfix"

local FROM = "sender@example.org"

describe("extensions against a real Postfix #postfix", function()
  local pf

  before_each(function()
    if not postfix.available() then return end
    pf = postfix.start{}
  end)

  after_each(function()
    if pf then pf:stop() end
    pf = nil
    postfix.stop_all()
  end)

  local function connect(extra)
    local o = { host = "127.0.0.1", port = pf.ports.plain, tls = "none", helo = "client.test",
                timeout = 10 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return assert(smtp.connect(o))
  end

  it("offers what the client uses, with enhanced codes on every reply", function()
    if not pf then pending("postfix or dovecot missing, or not root") return end
    local s = connect()
    for _, cap in ipairs({ "PIPELINING", "CHUNKING", "SIZE", "DSN", "SMTPUTF8", "8BITMIME",
                           "ENHANCEDSTATUSCODES" }) do
      assert.truthy(s.capabilities[cap], cap)
    end
    local res = assert(s:send{ envelope = { from = FROM, to = { "a@example.net" } },
                               message = "Subject: one\r\n\r\nbody\r\n" })
    assert.matches("^2%.%d+%.%d+$", res.enhanced)
    s:quit()
  end)

  it("send_many over CHUNKING: every message delivered byte for byte, in order", function()
    if not pf then pending("postfix or dovecot missing, or not root") return end
    local sent = {}
    local s = connect{ window = 4, debug = function(kind, text)
      if kind == "send" then sent[#sent + 1] = text end
    end }
    local list = {}
    for i = 1, 6 do
      list[i] = { envelope = { from = FROM, to = { "r" .. i .. "@example.net" } },
                  message = "Subject: n" .. i .. "\r\n\r\n.leading dot " .. i .. "\r\nend\r\n" }
    end
    local results = s:send_many(list)
    s:quit()
    for i = 1, 6 do assert.equal(250, results[i].code, results[i].error) end
    local bdat, data = 0, 0
    for _, line in ipairs(sent) do
      if line:find("^'BDAT %d+ LAST") then bdat = bdat + 1 end
      if line == "'DATA\\r\\n'" then data = data + 1 end
    end
    assert.equal(6, bdat)
    assert.equal(0, data)
    local got = pf:messages(6, 20)
    local by_rcpt = {}
    for _, m in ipairs(got) do by_rcpt[m.recipient] = m.content end
    for i = 1, 6 do
      local body = by_rcpt["r" .. i .. "@example.net"]
      assert.truthy(body, "message " .. i .. " not delivered")
      assert.truthy(body:find("\n.leading dot " .. i .. "\nend", 1, true), body)
    end
  end)

  it("DSN, SMTPUTF8 and 8BITMIME parameters are accepted", function()
    if not pf then pending("postfix or dovecot missing, or not root") return end
    local s = connect()
    local raw = "Subject: =?UTF-8?Q?caf=C3=A9?=\r\n\r\ncaf\195\169 8-bit body\r\n"
    local res, err = s:send{ envelope = { from = FROM, to = { "j\195\182rg@example.net" } },
                             message = raw,
                             dsn = { ret = "hdrs", envid = "id+1", notify = { "failure", "delay" },
                                     orcpt = true } }
    assert.is_table(res, err)
    s:quit()
    local got = pf:messages(1, 20)
    assert.equal("j\195\182rg@example.net", got[1].recipient)
    assert.truthy(got[1].content:find("caf\195\169 8-bit body", 1, true))
  end)

  it("a message over the advertised SIZE is refused before anything is sent", function()
    if not pf then pending("postfix or dovecot missing, or not root") return end
    local s = connect()
    local limit = tonumber(s.capabilities.SIZE)
    assert.truthy(limit and limit > 0)
    local big = "Subject: big\r\n\r\n" ..
      string.rep(string.rep("y", 76) .. "\r\n", math.floor(limit / 78) + 2)
    local res, err, info = s:send{ envelope = { from = FROM, to = { "a@example.net" } }, message = big }
    assert.is_nil(res)
    assert.equal("size", info.kind, err)
    -- the session is untouched: the next message goes through
    assert.is_table((s:send{ envelope = { from = FROM, to = { "a@example.net" } },
                             message = "Subject: small\r\n\r\nok\r\n" }))
    s:quit()
  end)
end)
