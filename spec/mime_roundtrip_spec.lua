-- Round trips: messages built by smtp.message, parsed by an independent
-- MIME implementation (Python's email package with policy.default, through
-- spec/support/mime_check.py). Every message must parse without a single
-- defect, and every header and part must come back exactly.
local smtp = require "smtp"
local util = require "spec.support.util"

local CHECK = "spec/support/mime_check.py"

-- Debian's python3 first (the one the package list installs), else PATH.
local function find_python()
  for _, py in ipairs({ "/usr/bin/python3", "python3" }) do
    local ok = os.execute(py .. " -c 'import email.policy, json, hashlib' >/dev/null 2>&1")
    if ok == true or ok == 0 then return py end
  end
end

local PYTHON = find_python()
local has_json, json = pcall(require, "dkjson")

local shell_quote, write_file = util.shell_quote, util.write_file

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function sha256_file(path)
  local out = util.capture("sha256sum " .. shell_quote(path))
  return assert(out:match("^(%x+)"), "sha256sum failed: " .. out)
end

local function sha256(s)
  local path = os.tmpname()
  write_file(path, s)
  local sum = sha256_file(path)
  os.remove(path)
  return sum
end

-- Text bodies travel in canonical form: CRLF line ends, a final line end.
local function canonical(text)
  local t = text:gsub("\r\n", "\n"):gsub("\r", "\n"):gsub("\n", "\r\n")
  if t ~= "" and t:sub(-2) ~= "\r\n" then t = t .. "\r\n" end
  return t
end

-- Streams the message to a file, as smtp.send would stream it; returns
-- the path and the message.
local function write_message(spec)
  local msg = assert(smtp.message(spec))
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  local src, written = msg:source(), 0
  while true do
    local chunk, err = src()
    assert.is_nil(err)
    if not chunk then break end
    written = written + #chunk
    f:write(chunk)
  end
  f:close()
  assert.equal(msg.size, written)
  return path, msg
end

-- Builds each message, has Python parse them all in one run and returns
-- the reports and the messages, in order.
local function roundtrip_many(specs)
  local paths, msgs = {}, {}
  for i, spec in ipairs(specs) do paths[i], msgs[i] = write_message(spec) end
  local quoted = {}
  for i, path in ipairs(paths) do quoted[i] = shell_quote(path) end
  local p = assert(io.popen(PYTHON .. " " .. CHECK .. " " .. table.concat(quoted, " ") .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  for _, path in ipairs(paths) do os.remove(path) end
  local reports = {}
  for line in out:gmatch("[^\n]+") do
    local report, _, err = json.decode(line)
    assert(type(report) == "table", "mime_check.py: " .. tostring(err) .. ": " .. out:sub(1, 2000))
    reports[#reports + 1] = report
  end
  assert.equal(#specs, #reports)
  return reports, msgs
end

local function roundtrip(spec)
  local reports, msgs = roundtrip_many({ spec })
  return reports[1], msgs[1]
end

-- No defect anywhere, no line over 998 octets, no bare CR or LF.
local function assert_clean(report)
  assert.same({}, report.defects)
  for _, part in ipairs(report.parts) do
    assert.same({}, part.defects, "defects in part " .. part.path)
  end
  assert.is_true(report.lines.max <= 998)
  assert.equal(0, report.lines.bare_cr_or_lf)
end

local function header(report, name)
  for _, pair in ipairs(report.headers) do
    if pair[1]:lower() == name:lower() then return pair[2] end
  end
end

local function leaves(report)
  local out = {}
  for _, p in ipairs(report.parts) do
    if not p.content_type:match("^multipart/") then out[#out + 1] = p end
  end
  return out
end

-- The part came back byte for byte.
local function assert_content(part, data)
  assert.equal(#data, part.length, "length of part " .. part.path)
  if part.hex then
    assert.equal(hex(data), part.hex, "content of part " .. part.path)
  else
    assert.equal(sha256(data), part.sha256, "sha256 of part " .. part.path)
  end
end

local function random_bytes(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local s = f:read(n)
  f:close()
  return s
end

local describe_if = (PYTHON and has_json) and describe or function(name)
  describe(name, function()
    pending("needs python3 with the email package and dkjson (" ..
      (PYTHON and "dkjson missing" or "python3 missing") .. ")")
  end)
end

describe_if("MIME round trips through Python's email package", function()
  it("Unicode subject, display names, groups and user headers decode exactly", function()
    local subject = "Grüße aus Köln – 日本語のテキスト, emoji 😀 and a long tail to fold over lines ✓"
    -- Long, folded over several lines: the ASCII words between the encoded
    -- ones keep it exact even for Python, which (against RFC 2047 6.2)
    -- keeps the space between two adjacent encoded words in a phrase.
    local long_name = string.rep("Ünïcödé Name ", 10) .. "Énd"
    local report = roundtrip{
      from = { name = "Jörg Müller", address = "joerg@example.de" },
      to = { '"Doe, John" <jd@example.com>', { name = "李小龍", address = "lee@example.cn" },
             "Team: a@example.org, Ünï Cödé <u@example.org>;" },
      cc = { { name = 'Ann "the Brave" O\'Neil', address = "ann@example.com" },
             { name = long_name, address = "long@example.com" } },
      reply_to = { name = "Støtte 🙂", address = "support@example.no" },
      bcc = "hidden@example.com",
      subject = subject,
      headers = { { "X-Unicode", "Ünïcödé value" }, { "X-Plain", "plain value" } },
      text = "hi\n",
    }
    assert_clean(report)
    assert.equal(subject, header(report, "Subject"))
    assert.equal("Ünïcödé value", header(report, "X-Unicode"))
    assert.equal("plain value", header(report, "X-Plain"))
    assert.is_nil(header(report, "Bcc"))
    assert.same({ { "Jörg Müller", "joerg@example.de" } }, report.addresses.from.mailboxes)
    assert.same({ { "Doe, John", "jd@example.com" }, { "李小龍", "lee@example.cn" },
                  { "", "a@example.org" }, { "Ünï Cödé", "u@example.org" } },
      report.addresses.to.mailboxes)
    assert.same({ { 'Ann "the Brave" O\'Neil', "ann@example.com" }, { long_name, "long@example.com" } },
      report.addresses.cc.mailboxes)
    assert.same({ { "Støtte 🙂", "support@example.no" } }, report.addresses["reply-to"].mailboxes)
    local groups = report.addresses.to.groups
    assert.same({ "Team", 2 }, groups[#groups])
  end)

  it("undisclosed-recipients:; parses as an empty group", function()
    local report = roundtrip{ from = "a@example.com", to = "undisclosed-recipients:;", bcc = "b@example.com",
                              subject = "s", text = "x" }
    assert_clean(report)
    assert.same({ { "undisclosed-recipients", 0 } }, report.addresses.to.groups)
  end)

  it("random subjects (ASCII, Unicode, long words, tabs) all decode exactly", function()
    math.randomseed(2026)
    local pieces = { "word", "Grüße", "日本", "😀", "x", "a-very-long-word-" .. string.rep("y", 90),
                     "=?", "?=", "(paren)", '"q"', ",", "tab\there", "ümlaut-in-a-longer-word" }
    local specs = {}
    for k = 1, 40 do
      local words = {}
      for i = 1, math.random(1, 30) do words[i] = pieces[math.random(#pieces)] end
      specs[k] = { from = "a@example.com", to = "b@example.com", subject = table.concat(words, " "),
                   text = "x" }
    end
    for k, report in ipairs(roundtrip_many(specs)) do
      assert_clean(report)
      assert.equal(specs[k].subject, header(report, "Subject"))
      assert.is_true(report.lines.max_header <= 998)
    end
  end)

  it("text and html as multipart/alternative, long lines and Unicode included", function()
    local long = string.rep("0123456789 abcdefghij ", 80)   -- one line of 1760 octets
    local text = "Hello Jörg,\n\n" .. long .. "\n.a line that starts with a dot\nFrom here\n"
      .. "trailing spaces   \nend"
    local html = "<html><body><p>日本語のテキスト — " .. string.rep("データ", 200) .. "</p></body></html>"
    local report = roundtrip{ from = "a@example.com", to = "b@example.com", subject = "bodies",
                              text = text, html = html }
    assert_clean(report)
    assert.equal("multipart/alternative(text/plain,text/html)", report.structure)
    local parts = leaves(report)
    assert.equal("quoted-printable", parts[1].cte)
    assert.equal("utf-8", parts[1].params.charset)
    assert_content(parts[1], canonical(text))
    assert.equal("base64", parts[2].cte)
    assert_content(parts[2], canonical(html))
  end)

  it("binary and text attachments come back byte for byte, with their names and types", function()
    local all_bytes = {}
    for i = 0, 255 do all_bytes[#all_bytes + 1] = string.char(i) end
    local binary = string.rep(table.concat(all_bytes), 40)
    local file_data = random_bytes(100000)
    local path = os.tmpname()
    write_file(path, file_data)
    local atts = {
      { filename = "all-bytes.bin", content = binary },
      { filename = "crlf.txt", content = "ASCII\r\nwith CRLF\r\n" },
      { filename = "lf.txt", content = "bare\nLF\nline ends\n" },
      { filename = "utf8.txt", content = "Grüße, CRLF text\r\n" .. string.rep("mostly ascii ", 50) .. "\r\n" },
      { filename = "no-final-eol.csv", content = "a,b\r\n1,2" },
      { filename = "Überweisung März – " .. string.rep("sehr lang ", 8) .. ".pdf", content = "%PDF-1.4\n\0\1" },
      { filename = 'quoted "name" \\ here.txt', content = "q" },
      { filename = string.rep("long-ascii-name-", 8) .. ".dat", content = "d" },
      { path = path, filename = "random.bin" },
      { filename = "empty.txt", content = "" },
    }
    local report = roundtrip{ from = "a@example.com", to = "b@example.com", subject = "attachments",
                              text = "see attached", attachments = atts }
    os.remove(path)
    assert_clean(report)
    local parts = leaves(report)
    assert.equal(1 + #atts, #parts)
    for i, att in ipairs(atts) do
      local part = parts[i + 1]
      assert.equal(att.filename, part.filename)
      assert.equal("attachment", part.disposition)
      assert_content(part, att.content or file_data)
    end
    assert.equal("application/octet-stream", parts[2].content_type)
    assert.equal("text/plain", parts[3].content_type)
    assert.equal("7bit", parts[3].cte)
    assert.equal("base64", parts[4].cte)
    assert.equal("quoted-printable", parts[5].cte)
    assert.equal("utf-8", parts[5].params.charset)
    assert.equal("text/csv", parts[6].content_type)
    assert.equal("application/pdf", parts[7].content_type)
  end)

  it("an inline image with a Content-ID goes into multipart/related with the html", function()
    local png = "\137PNG\r\n\26\n" .. random_bytes(5000)
    local report = roundtrip{
      from = "a@example.com", to = "b@example.com", subject = "inline",
      text = "plain version",
      html = '<p>Logo: <img src="cid:logo@example.com"></p>',
      attachments = {
        { filename = "logo.png", content = png, content_id = "logo@example.com" },
        { filename = "report.pdf", content = "%PDF" },
      },
    }
    assert_clean(report)
    assert.equal("multipart/mixed(multipart/alternative(text/plain,multipart/related(text/html,image/png)),"
      .. "application/pdf)", report.structure)
    local parts = leaves(report)
    assert.equal("image/png", parts[3].content_type)
    assert.equal("<logo@example.com>", parts[3].content_id)
    assert.equal("inline", parts[3].disposition)
    assert_content(parts[3], png)
    for _, p in ipairs(report.parts) do
      if p.content_type == "multipart/related" then assert.equal("text/html", p.params.type) end
    end
  end)

  it("a 10 MB random binary attachment from a file streams and decodes exactly", function()
    local path = os.tmpname()
    assert(os.execute("head -c 10485760 /dev/urandom > " .. shell_quote(path)))
    local want = sha256_file(path)
    local report, msg = roundtrip{ from = "a@example.com", to = "b@example.com", subject = "big",
                                   text = "10 MB attached", attachments = { { path = path, filename = "big.bin" } } }
    os.remove(path)
    assert_clean(report)
    assert.is_true(msg.size > 10485760 * 4 / 3)
    local part = leaves(report)[2]
    assert.equal("base64", part.cte)
    assert.equal(10485760, part.length)
    assert.equal(want, part.sha256)
  end)
end)
