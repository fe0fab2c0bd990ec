-- smtp.message: the RFC 5322 / MIME composer (headers, encoded words,
-- folding, bodies, attachments, structure, envelope, size and streaming).
local smtp = require "smtp"
local core = require "smtp.core"
local message = require "smtp.message"
local mime = require "smtp.mime"
local mimetypes = require "smtp.mimetypes"
local util = require "spec.support.util"

local DATE = "Thu, 01 Jan 2026 00:00:00 +0000"
local MSGID = "<fixed.1@example.org>"

-- A message spec with fixed Date and Message-ID, plus the given fields
-- (false removes a default).
local function spec(extra)
  local s = { from = "sender@example.org", to = "rcpt@example.net", subject = "s", text = "hello\n",
              date = DATE, message_id = MSGID }
  for k, v in pairs(extra or {}) do
    if v == false then s[k] = nil else s[k] = v end
  end
  return s
end

local function build(extra)
  local m, err = smtp.message(spec(extra))
  assert(m, err)
  return m
end

local function text_of(extra)
  return assert(build(extra):tostring())
end

-- The failure triple for a bad value.
local function refused(extra, pattern)
  local m, err, info = smtp.message(spec(extra))
  assert.is_nil(m)
  assert.is_string(err)
  assert.matches("^argument: ", err)
  if pattern then assert.truthy(err:find(pattern), err .. " !~ " .. pattern) end
  assert.same({ kind = "argument", message = err:sub(11), temporary = false }, info)
  return err
end

local function header_block(s)
  return s:match("^(.-\r\n)\r\n")
end

-- The unfolded value of the first header called name in a header block.
local function header_value(s, name)
  local block = "\r\n" .. header_block(s)
  local v = block:match("\r\n" .. name:gsub("%-", "%%-") .. ": (.-)\r\n[^ \t]")
  return v and v:gsub("\r\n", "")
end

local function header_names(s)
  local names = {}
  for name in ("\r\n" .. header_block(s)):gmatch("\r\n([^ \t:\r\n]+):") do names[#names + 1] = name end
  return names
end

local function lines(s)
  local out = {}
  for line in s:gmatch("(.-)\r\n") do out[#out + 1] = line end
  return out
end

local function longest_line(s)
  local n = 0
  for _, l in ipairs(lines(s)) do if #l > n then n = #l end end
  return n
end

-- Decodes RFC 2047 words (UTF-8, B or Q) the way a reader unfolds them.
local decode_words = util.decode_words

local function utf8_valid(s)
  local rest = s:gsub("[\240-\244][\128-\191][\128-\191][\128-\191]", "")
    :gsub("[\224-\239][\128-\191][\128-\191]", ""):gsub("[\194-\223][\128-\191]", "")
  return not rest:find("[\128-\255]")
end

local function tmpfile(content)
  local path = os.tmpname()
  util.write_file(path, content)
  return path
end

-- The leaf parts of a rendered message, in order: { headers = text, body = text }.
local function leaf_parts(s)
  local out = {}
  local function walk(text)
    local head, body = text:match("^(.-\r\n)\r\n(.*)$")
    local b = head:match('boundary="([^"]+)"')
    if not b then
      out[#out + 1] = { headers = head, body = body }
      return
    end
    local delim = "--" .. b
    local pieces = {}
    local pos = 1
    while true do
      local s1, e1 = body:find(delim, pos, true)
      if not s1 then break end
      pieces[#pieces + 1] = e1
      if body:sub(e1 + 1, e1 + 2) == "--" then break end
      pos = e1 + 1
    end
    for k = 1, #pieces - 1 do
      local start = pieces[k] + 3   -- after the delimiter's CRLF
      local stop = body:find("\r\n" .. delim, start, true)
      walk(body:sub(start, stop - 1))
    end
  end
  walk(s)
  return out
end

describe("smtp.message", function()
  describe("the header", function()
    it("keeps the exact layout smtp.send relies on for a plain text message", function()
      assert.equal("From: sender@example.org\r\n"
        .. "To: rcpt@example.net\r\n"
        .. "Subject: s\r\n"
        .. "Date: " .. DATE .. "\r\n"
        .. "Message-ID: " .. MSGID .. "\r\n"
        .. "MIME-Version: 1.0\r\n"
        .. "Content-Type: text/plain; charset=utf-8\r\n"
        .. "Content-Transfer-Encoding: 7bit\r\n"
        .. "\r\n"
        .. "hello\r\n", text_of())
    end)

    it("writes From, Sender, To, Cc, Reply-To, Subject, Date, Message-ID, user headers, MIME-Version", function()
      local s = text_of{ from = "A <a@x.org>", sender = "S <s@x.org>", to = "t@y.org", cc = "c@y.org",
                         bcc = "hidden@z.org", reply_to = "r@x.org",
                         headers = { { "X-Second", "2" }, { "X-First", "1" } } }
      assert.same({ "From", "Sender", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID",
                    "X-Second", "X-First", "MIME-Version", "Content-Type", "Content-Transfer-Encoding" },
        header_names(s))
      assert.equal("S <s@x.org>", header_value(s, "Sender"))
      assert.equal("r@x.org", header_value(s, "Reply-To"))
    end)

    it("never writes Bcc", function()
      local m = build{ bcc = { "hidden@z.org", "Hidden Two <h2@z.org>" } }
      local s = m:tostring()
      assert.is_nil(s:find("hidden@z.org", 1, true))
      assert.is_nil(s:find("h2@z.org", 1, true))
      assert.is_nil(s:lower():find("\nbcc:", 1, true))
      assert.same({ "rcpt@example.net", "hidden@z.org", "h2@z.org" }, m.envelope.to)
    end)

    it("keeps user headers in the order given (array) or sorted by name (map)", function()
      local s = text_of{ headers = { { "X-Z", "1" }, { "X-A", "2" }, { "X-M", 3 } } }
      assert.matches("X%-Z: 1\r\nX%-A: 2\r\nX%-M: 3\r\n", s)
      s = text_of{ headers = { ["X-Z"] = "1", ["X-A"] = "2", ["X-M"] = "3" } }
      assert.matches("X%-A: 2\r\nX%-M: 3\r\nX%-Z: 1\r\n", s)
    end)

    it("refuses user headers the composer writes itself, and invalid names", function()
      for _, name in ipairs({ "From", "to", "BCC", "Subject", "Date", "Message-ID", "MIME-Version",
                              "Content-Type", "content-transfer-encoding" }) do
        refused({ headers = { { name, "x" } } }, "written by the composer")
      end
      refused({ headers = { { "X A", "x" } } }, "invalid header name")
      refused({ headers = { { "X:A", "x" } } }, "invalid header name")
      refused({ headers = { { "", "x" } } }, "invalid header name")
      refused({ headers = { { "X-" .. string.rep("a", 80), "x" } } }, "invalid header name")
      refused({ headers = { { "X-Ä", "x" } } }, "invalid header name")
    end)

    it("encodes non-ASCII user header values", function()
      local s = text_of{ headers = { { "X-Note", "Grüße" } } }
      assert.equal("Grüße", decode_words(header_value(s, "X-Note")))
    end)

    it("writes a Date in RFC 5322 form with the local offset, from now or from a time", function()
      local s = text_of{ date = false }
      assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d [+-]%d%d%d%d$", header_value(s, "Date"))
      local t = os.time{ year = 2026, month = 3, day = 4, hour = 5, min = 6, sec = 7 }
      assert.matches("^Wed, 04 Mar 2026 05:06:07 [+-]%d%d%d%d$", message.date(t))
      assert.equal(message.date(t), header_value(text_of{ date = t }, "Date"))
    end)

    it("gives the local offset of the zone in force (TZ), across a day and a year boundary", function()
      -- a child process per zone (TZ is read once per process), under this
      -- interpreter and its build; POSIX TZ strings need no zone files
      local interp = rawget(_G, "jit") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
      local function date_in(tz, t)
        local cmd = string.format("TZ='%s' %s -e 'package.path = \"./lua/?.lua;./lua/?/init.lua;\" .. package.path " ..
          "package.cpath = \"./build/%s/?.so;\" .. package.cpath io.write(require(\"smtp.message\").date(%d))'",
          tz, interp, interp, t)
        local p = assert(io.popen(cmd))
        local out = p:read("*a")
        p:close()
        return out
      end
      assert.equal("Thu, 01 Jan 1970 00:00:00 +0000", date_in("UTC0", 0))
      assert.equal("Thu, 01 Jan 1970 05:30:00 +0530", date_in("XST-5:30", 0))
      assert.equal("Wed, 31 Dec 1969 16:00:00 -0800", date_in("PST8", 0))
      assert.equal("Wed, 31 Dec 1969 20:30:01 -0330", date_in("NST3:30", 1))
      -- summer time by the rule: +0200 in May, +0100 in January
      assert.equal("Thu, 28 May 2026 22:26:40 +0200", date_in("CET-1CEST,M3.5.0,M10.5.0/3", 1780000000))
      assert.equal("Sat, 02 Jan 2027 01:00:00 +0100", date_in("CET-1CEST,M3.5.0,M10.5.0/3", 1798848000))
    end)

    it("makes a unique Message-ID at the sender's domain, or at message_id_domain", function()
      local a = build{ message_id = false, from = "A <a@mail.example.org>" }
      local b = build{ message_id = false, from = "A <a@mail.example.org>" }
      assert.matches("^<[%w%.]+@mail%.example%.org>$", a.message_id)
      assert.are_not.equal(a.message_id, b.message_id)
      assert.equal(a.message_id, header_value(a:tostring(), "Message-ID"))
      local c = build{ message_id = false, sender = "s@relay.example.net" }
      assert.matches("@relay%.example%.net>$", c.message_id)
      local d = build{ message_id = false, message_id_domain = "ids.example.com" }
      assert.matches("@ids%.example%.com>$", d.message_id)
      -- A domain that cannot be an id-right falls back to this host.
      local e = build{ message_id = false, from = "a@[192.0.2.1]" }
      assert.matches("^<[^@]+@[%w%-%.]+>$", e.message_id)
    end)

    it("takes a given Message-ID with or without brackets", function()
      assert.equal("<x.1@example.org>", build{ message_id = "x.1@example.org" }.message_id)
      assert.equal("<x.1@example.org>", build{ message_id = "<x.1@example.org>" }.message_id)
      refused({ message_id = "no at sign" }, "invalid message_id")
      refused({ message_id = "<a b@c>" }, "invalid message_id")
      refused({ message_id_domain = "bad domain" }, "invalid message_id_domain")
    end)

    it("requires From, one Sender at most, and Sender when From has several mailboxes", function()
      refused({ from = false }, "from is required")
      refused({ sender = { "a@x.org", "b@x.org" } }, "sender takes one address")
      refused({ from = "a@x.org, b@x.org" }, "give sender")
      assert.truthy(smtp.message(spec{ from = "a@x.org, b@x.org", sender = "a@x.org" }))
      refused({ from = "G: a@x.org;" }, "groups are not allowed")
    end)

    it("keeps groups in To and Cc: undisclosed-recipients:; with the recipients in Bcc", function()
      local m = build{ to = "undisclosed-recipients:;", bcc = "a@x.org, b@x.org" }
      local s = m:tostring()
      assert.equal("undisclosed-recipients:;", header_value(s, "To"))
      assert.same({ "a@x.org", "b@x.org" }, m.envelope.to)
      m = build{ to = { "Team: a@x.org, B <b@x.org>;", "c@y.org" } }
      assert.equal("Team: a@x.org, B <b@x.org>;, c@y.org", header_value(m:tostring(), "To"))
      assert.same({ "a@x.org", "b@x.org", "c@y.org" }, m.envelope.to)
    end)

    it("quotes display names that need it and encodes non-ASCII ones", function()
      local s = text_of{ from = { name = "Doe, John", address = "jd@x.org" },
                         to = { { name = "Jörg Müller", address = "j@x.de" }, "Plain Name <p@x.org>" } }
      assert.equal('"Doe, John" <jd@x.org>', header_value(s, "From"))
      local to = header_value(s, "To")
      assert.matches("^=%?UTF%-8%?[BQ]%?.-%?= <j@x%.de>, Plain Name <p@x%.org>$", to)
      assert.equal("Jörg Müller <j@x.de>, Plain Name <p@x.org>", decode_words(to))
    end)
  end)

  describe("the envelope", function()
    it("takes the Sender (else the first From) and every To, Cc and Bcc address once", function()
      local m = build{ from = "A <a@x.org>", to = { "t@y.org", "T2 <t2@y.org>" }, cc = "t@y.org, c@y.org",
                       bcc = "b@z.org" }
      assert.same({ from = "a@x.org", to = { "t@y.org", "t2@y.org", "c@y.org", "b@z.org" } }, m.envelope)
      assert.equal("s@x.org", build{ sender = "S <s@x.org>" }.envelope.from)
    end)

    it("lets envelope override either half", function()
      local m = build{ envelope = { from = "bounce@x.org" } }
      assert.same({ from = "bounce@x.org", to = { "rcpt@example.net" } }, m.envelope)
      m = build{ envelope = { to = "only@x.org" } }
      assert.same({ from = "sender@example.org", to = { "only@x.org" } }, m.envelope)
    end)
  end)

  describe("refuses CR and LF (header injection) in every field", function()
    local evil = "x\r\nBcc: evil@example.com"
    local cases = {
      { "from", { from = "a@x.org" .. evil }, "^argument: from" },
      { "from name", { from = { name = evil, address = "a@x.org" } }, "^argument: from" },
      { "to", { to = { "a@x.org", "b@x.org\nDATA" } }, "^argument: to" },
      { "cc", { cc = "c@x.or\rg" }, "^argument: cc" },
      { "bcc", { bcc = "c@x.org\r\n" }, "^argument: bcc" },
      { "reply_to", { reply_to = "r@x.org\n" }, "^argument: reply_to" },
      { "sender", { sender = "s@x.org\r" }, "^argument: sender" },
      { "group name", { to = { group = evil, members = {} } }, "^argument: to" },
      { "subject", { subject = "hi" .. evil }, "subject" },
      { "header value", { headers = { ["X-Tag"] = "a" .. evil } }, "X%-Tag" },
      { "header name", { headers = { { "X-A\r\nBcc", "e@x.org" } } }, "header name" },
      { "date", { date = DATE .. evil }, "date" },
      { "message_id", { message_id = "<a@b>" .. evil }, "message_id" },
      { "message_id_domain", { message_id = false, message_id_domain = "x.org" .. evil }, "message_id_domain" },
      { "attachment filename", { attachments = { { filename = "a" .. evil, content = "x" } } },
        "attachments%[1%]: filename" },
      { "attachment content_type", { attachments = { { content = "x", content_type = "text/plain" .. evil } } },
        "attachments%[1%]: content_type" },
      { "attachment content_id", { attachments = { { content = "x", content_id = "a@b" .. evil } } },
        "attachments%[1%]: content_id" },
      { "attachment disposition", { attachments = { { content = "x", disposition = "inline" .. evil } } },
        "attachments%[1%]: disposition" },
      { "attachment path", { attachments = { { path = "/tmp/x" .. evil } } }, "attachments%[1%]: path" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        refused(c[2], c[3])
      end)
    end
  end)

  describe("wrong types raise", function()
    local cases = {
      { subject = 42 }, { text = {} }, { html = true }, { to = 42 }, { headers = "X-A: 1" },
      { attachments = "a.pdf" }, { attachments = { "a.pdf" } }, { attachments = { { path = 42 } } },
      { date = {} }, { message_id = 1 }, { envelope = "x" }, { headers = { { 1, "x" } } },
      { headers = { { "X-A", {} } } },
    }
    for i, c in ipairs(cases) do
      it("case " .. i, function()
        assert.has_error(function() smtp.message(spec(c)) end)
      end)
    end
    it("a non-table spec", function()
      assert.has_error(function() smtp.message("x") end, "smtp: options must be a table, got string")
    end)
    it("blames the caller's line", function()
      local line
      local ok, err = pcall(function()
        line = debug.getinfo(1, "l").currentline + 1
        local m = smtp.message(spec{ subject = 42 })
        return m
      end)
      assert.is_false(ok)
      assert.truthy(err:find("message_spec.lua:" .. line .. ": smtp: option 'subject' must be a string, got number",
        1, true), err)
    end)
  end)

  describe("encoded words and folding", function()
    it("folds a long ASCII subject at whitespace within 78 columns and unfolds to the original", function()
      local subject = "This is a rather long subject line\tthat has  to be folded somewhere, "
        .. "because nobody wants lines longer than seventy-eight characters in a header"
      local s = text_of{ subject = subject }
      assert.equal(subject, header_value(s, "Subject"))
      for _, l in ipairs(lines(header_block(s))) do assert.is_true(#l <= 78, l) end
      assert.is_nil(header_block(s):find("\r\n[^ \t%u]"))
    end)

    it("keeps an ASCII word up to 998 octets plain on its own line, and encodes a longer one", function()
      local word = string.rep("w", 900)
      local s = text_of{ subject = "short " .. word .. " end" }
      assert.equal("short " .. word .. " end", header_value(s, "Subject"))
      assert.truthy(s:find("\r\n " .. word .. "\r\n end\r\n", 1, true))
      local long = string.rep("L", 2000)
      s = text_of{ subject = "x " .. long }
      local v = header_value(s, "Subject")
      assert.matches("^=%?UTF%-8%?", v)
      assert.equal("x " .. long, decode_words(v))
      assert.is_true(longest_line(header_block(s)) <= 78)
    end)

    it("encodes a non-ASCII subject in words of at most 75 characters, lines of at most 78", function()
      local subject = "Grüße aus Köln – 日本語のテキスト – ein sehr langer Betreff, der gefaltet werden muss"
        .. " 😀 emoji and more text to go past several lines of header ✓"
      local s = text_of{ subject = subject }
      local raw = s:match("\r\nSubject: (.-)\r\n[^ ]")
      for i, l in ipairs(lines(raw .. "\r\n")) do
        assert.is_true(#l + (i == 1 and #"Subject: " or 0) <= 78, l)
      end
      for word in raw:gmatch("=%?UTF%-8%?[BQ]%?.-%?=") do
        assert.is_true(#word <= 75, word)
        -- No word splits a UTF-8 sequence.
        assert.is_true(utf8_valid(decode_words(word)), word)
      end
      assert.equal(subject, decode_words(header_value(s, "Subject")))
    end)

    it("encodes control characters other than tab (NUL never goes raw)", function()
      local s = text_of{ subject = "a\0b\1c" }
      assert.is_nil(s:find("\0", 1, true))
      assert.equal("a\0b\1c", decode_words(header_value(s, "Subject")))
    end)

    it("encodes text that looks like an encoded word, so it reads back literally", function()
      local s = text_of{ subject = "=?utf-8?q?hello?=" }
      assert.equal("=?utf-8?q?hello?=", decode_words(header_value(s, "Subject")))
    end)

    it("never writes a header line over 998 octets, whatever the input", function()
      math.randomseed(7)
      local alphabet = { "a", " ", "ä", "\t", "日", "x", "=", "?", "," }
      for _ = 1, 30 do
        local t = {}
        for i = 1, math.random(1, 3000) do
          t[i] = math.random() < 0.9 and "a" or alphabet[math.random(#alphabet)]
        end
        local s = text_of{ subject = table.concat(t), headers = { { "X-Long", table.concat(t) } } }
        assert.is_true(longest_line(header_block(s)) <= 998)
      end
    end)

    it("refuses an address header that cannot fit 998 octets", function()
      refused({ to = string.rep("a", 990) .. "@x.org" }, "998")
    end)
  end)

  describe("bodies", function()
    it("text only: text/plain utf-8, 7bit when ASCII with short lines, CRLF line ends", function()
      local s = text_of{ text = "one\ntwo\r\nthree\rfour" }
      assert.matches("Content%-Type: text/plain; charset=utf%-8\r\nContent%-Transfer%-Encoding: 7bit\r\n\r\n"
        .. "one\r\ntwo\r\nthree\r\nfour\r\n$", s)
    end)

    it("html only: text/html", function()
      local s = text_of{ text = false, html = "<p>hi</p>" }
      assert.matches("Content%-Type: text/html; charset=utf%-8\r\n", s)
      assert.matches("\r\n\r\n<p>hi</p>\r\n$", s)
    end)

    it("text and html: multipart/alternative, text first", function()
      local s = text_of{ html = "<p>hello</p>" }
      assert.matches("Content%-Type: multipart/alternative; boundary=\"=_%x+\"\r\n", s)
      local parts = leaf_parts(s)
      assert.equal(2, #parts)
      assert.matches("text/plain", parts[1].headers)
      assert.equal("hello\r\n", parts[1].body)
      assert.matches("text/html", parts[2].headers)
    end)

    it("ASCII text with a line over 78 characters goes quoted-printable, lines of 78 stay 7bit", function()
      local long = ("0123456789"):rep(12) .. " end"      -- 124 characters
      local s = text_of{ text = "short line\n" .. long .. "\n" }
      assert.matches("Content%-Transfer%-Encoding: quoted%-printable\r\n", s)
      local body = s:match("\r\n\r\n(.*)$")
      for line in body:gmatch("([^\r\n]*)\r\n") do
        assert.is_true(#line <= 76, "encoded line of " .. #line .. " octets")
      end
      assert.equal("short line\r\n" .. long .. "\r\n", core.qpdecode(body))
      s = text_of{ text = ("x"):rep(78) .. "\n" }
      assert.matches("Content%-Transfer%-Encoding: 7bit\r\n", s)
      s = text_of{ text = false, html = "<p>" .. ("word "):rep(40) .. "</p>" }
      assert.matches("Content%-Transfer%-Encoding: quoted%-printable\r\n", s)
    end)

    it("quoted-printable for mostly-ASCII text, base64 for mostly non-ASCII", function()
      local s = text_of{ text = "Hello Jörg, this is mostly ASCII text with one umlaut.\n" }
      assert.matches("Content%-Transfer%-Encoding: quoted%-printable\r\n", s)
      assert.truthy(s:find("J=C3=B6rg", 1, true))
      s = text_of{ text = "日本語のテキストです。日本語のテキストです。\n" }
      assert.matches("Content%-Transfer%-Encoding: base64\r\n", s)
    end)

    it("quoted-printable for lines over 998 octets and for control characters", function()
      local long = string.rep("0123456789", 120)
      local s = text_of{ text = long .. "\n" }
      assert.matches("Content%-Transfer%-Encoding: quoted%-printable\r\n", s)
      assert.is_true(longest_line(s) <= 76)
      assert.equal(long .. "\r\n", core.qpdecode(s:match("\r\n\r\n(.*)$")))
      s = text_of{ text = "a\0b\n" }
      assert.matches("quoted%-printable", s)
      assert.is_nil(s:find("\0", 1, true))
    end)

    it("an empty message has an empty text/plain body", function()
      local s = text_of{ text = false }
      assert.matches("Content%-Type: text/plain; charset=utf%-8\r\nContent%-Transfer%-Encoding: 7bit\r\n\r\n$", s)
    end)
  end)

  describe("attachments", function()
    it("guesses the content type from the extension, case-insensitively", function()
      local cases = { ["r.pdf"] = "application/pdf", ["P.PNG"] = "image/png", ["a.jpeg"] = "image/jpeg",
                      ["n.txt"] = "text/plain", ["d.docx"] = "application/vnd.openxmlformats-"
                        .. "officedocument.wordprocessingml.document", ["x.tar.gz"] = "application/gzip",
                      ["noext"] = "application/octet-stream", ["weird.zzz"] = "application/octet-stream",
                      ["c.csv"] = "text/csv", ["z.zip"] = "application/zip", ["s.svg"] = "image/svg+xml" }
      for name, want in pairs(cases) do
        assert.equal(want, mimetypes.guess(name), name)
        local s = text_of{ attachments = { { filename = name, content = "x" } } }
        assert.truthy(s:find("Content-Type: " .. want .. ";", 1, true), name)
      end
      local n = 0
      for _ in pairs(mimetypes.by_extension) do n = n + 1 end
      assert.is_true(n >= 60)
    end)

    it("lets content_type override the guess, parameters included", function()
      local s = text_of{ attachments = { { filename = "data.bin", content = "x",
                                           content_type = "Text/CSV; charset=iso-8859-1" } } }
      assert.truthy(s:find('Content-Type: text/csv; charset=iso-8859-1; name="data.bin"', 1, true))
      refused({ attachments = { { filename = "a", content = "x", content_type = "nonsense" } } }, "content_type")
      refused({ attachments = { { filename = "a", content = "x", content_type = "multipart/mixed" } } },
        "multipart")
    end)

    it("quotes an ASCII file name and uses RFC 2231 for a non-ASCII one", function()
      local s = text_of{ attachments = { { filename = 'my "report".pdf', content = "x" } } }
      assert.truthy(s:find('Content-Disposition: attachment; filename="my \\"report\\".pdf"', 1, true))
      s = text_of{ attachments = { { filename = "Grüße.txt", content = "x" } } }
      assert.truthy(s:find("filename*=utf-8''Gr%C3%BC%C3%9Fe.txt", 1, true))
      assert.truthy(s:find("name*=utf-8''Gr%C3%BC%C3%9Fe.txt", 1, true))
    end)

    it("continues a long file name in RFC 2231 sections, never splitting a character", function()
      local name = string.rep("Überweisung ", 12) .. ".pdf"
      local s = text_of{ attachments = { { filename = name, content = "x" } } }
      local pieces = {}
      for k, v in s:gmatch(" filename%*(%d+)%*=([^;\r]+)") do pieces[tonumber(k) + 1] = v end
      assert.is_true(#pieces > 2)
      assert.matches("^utf%-8''", pieces[1])
      pieces[1] = pieces[1]:sub(8)
      for _, p in ipairs(pieces) do
        local bytes = p:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
        assert.is_true(utf8_valid(bytes), p)
      end
      local joined = table.concat(pieces):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
      assert.equal(name, joined)
      assert.is_true(longest_line(header_block(s) .. s) <= 78)
      -- Long ASCII names too.
      local ascii = string.rep("long-name-", 12) .. ".txt"
      s = text_of{ attachments = { { filename = ascii, content = "x" } } }
      assert.truthy(s:find(' filename*0="long-name-', 1, true))
      assert.is_true(longest_line(s) <= 78)
    end)

    it("takes the file name from the path, and filename overrides it", function()
      local path = tmpfile("PDF")
      local base = path:match("([^/]+)$")
      local s = text_of{ attachments = { { path = path } } }
      assert.truthy(s:find('filename="' .. base .. '"', 1, true))
      s = text_of{ attachments = { { path = path, filename = "report.pdf" } } }
      assert.truthy(s:find('filename="report.pdf"', 1, true))
      assert.truthy(s:find("Content-Type: application/pdf;", 1, true))
      os.remove(path)
    end)

    it("encodes each part with what keeps its bytes: 7bit, quoted-printable or base64", function()
      local file = tmpfile("plain ascii file\r\n")
      local s = text_of{ attachments = {
        { filename = "a.txt", content = "ascii with CRLF\r\nlines\r\n" },
        { filename = "b.txt", content = "bare LF\nlines\n" },
        { filename = "c.txt", content = "mostly ASCII with one ü in it, CRLF lines\r\n" },
        { filename = "d.bin", content = "\0\1\2\255" },
        { filename = "e.html", content = string.rep("x", 1200) .. "\r\n" },
        { path = file, filename = "f.txt" },
      } }
      os.remove(file)
      local parts = leaf_parts(s)
      local want = { "7bit", "7bit", "base64", "quoted-printable", "base64", "quoted-printable", "base64" }
      for i, p in ipairs(parts) do
        assert.equal(want[i], p.headers:match("Content%-Transfer%-Encoding: ([%w%-]+)"), i)
      end
      -- Text known to be UTF-8 says so.
      assert.truthy(parts[4].headers:find("text/plain; charset=utf-8;", 1, true))
      assert.is_nil(s:find("8bit", 1, true))
    end)

    it("checks the other attachment values", function()
      refused({ attachments = { {} } }, "path or content")
      refused({ attachments = { { path = "/etc/hostname", content = "x" } } }, "path or content")
      refused({ attachments = { { filename = "", content = "x" } } }, "filename is empty")
      refused({ attachments = { { content = "x", disposition = "sideways" } } }, "disposition")
      refused({ attachments = { { content = "x", content_id = "a b@c" } } }, "content_id")
      refused({ attachments = { { content = "x\0", content_type = "message/rfc822" } } }, "7bit")
      assert.truthy(smtp.message(spec{ attachments = { { content = "Subject: x\r\n\r\nhi\r\n",
                                                          content_type = "message/rfc822" } } }))
    end)

    it("refuses an unreadable attachment file before anything is sent", function()
      refused({ attachments = { { path = "/nonexistent/file.pdf" } } }, "attachments%[1%]: cannot open")
      refused({ attachments = { { content = "x" }, { path = "/" } } }, "attachments%[2%]: cannot read")
    end)
  end)

  describe("untrusted values (content_type parameters, Resent-Bcc, sizes, UTF-8 addresses)", function()
    -- The attachment's Content-Type, unfolded.
    local function ctype_of(att)
      local s = text_of{ attachments = { att } }:gsub("\r\n([ \t])", "%1")
      for v in s:gmatch("\r\nContent%-Type: ([^\r]*)") do
        if v:find("name=", 1, true) then return v end
      end
      error("no attachment Content-Type in " .. s)
    end

    it("a name= parameter in content_type cannot spoof the file name", function()
      refused({ attachments = { { content = "x", filename = "report.pdf",
                                  content_type = 'application/pdf; name="evil.exe"' } } },
        "name is written by filename")
      refused({ attachments = { { content = "x", filename = "report.pdf",
                                  content_type = "application/pdf; NAME=evil.exe" } } }, "name is written by filename")
    end)

    it("an unbalanced quote, a stray character or a repeated parameter is refused", function()
      refused({ attachments = { { content = "x", content_type = 'text/plain; charset="utf-8' } } }, "unbalanced quote")
      refused({ attachments = { { content = "x", content_type = "text/plain; charset" } } }, "name=value")
      refused({ attachments = { { content = "x", content_type = "text/plain; a=1; a=2" } } }, "given twice")
      refused({ attachments = { { content = "x", content_type = "text/plain; boundary=x" } } }, "boundary")
      refused({ attachments = { { content = "x", content_type = "text/plain; title*=utf-8''x" } } }, "2231")
    end)

    it("the caller's parameters are parsed and written again, encoded like the composer's", function()
      local ct = ctype_of{ content = "a,b\r\n", filename = "t.csv", content_type = 'TEXT/CSV ;Charset = "iso-8859-1"' }
      assert.truthy(ct:find('^text/csv; charset=iso%-8859%-1;'), ct)
      assert.truthy(ct:find('name="t.csv"', 1, true), ct)
      ct = ctype_of{ content = "x", filename = "x.bin", content_type = 'application/x-thing; title="a \\"b\\" c"' }
      assert.truthy(ct:find('title="a \\"b\\" c"', 1, true), ct)
      -- exactly one name=, the library's
      local _, names = ct:gsub("name=", "")
      assert.equal(1, names, ct)
    end)

    it("Resent-Bcc in headers is refused like Bcc", function()
      refused({ headers = { { "Resent-Bcc", "hidden@example.net" } } }, "Resent%-Bcc is written by the composer")
      refused({ headers = { ["resent-bcc"] = "hidden@example.net" } }, "written by the composer")
    end)

    it("a value longer than 64 KiB and a header section over 1 MiB are refused", function()
      refused({ subject = ("word "):rep(13108) .. "x" }, "subject is longer than 65536 octets")
      refused({ headers = { { "X-Big", ("v"):rep(65537) } } }, "X%-Big is longer than 65536 octets")
      local many = {}
      for i = 1, 20 do many[i] = { "X-H" .. i, ("w "):rep(30000) } end
      refused({ headers = many }, "header section would be longer than 1048576 octets")
      assert.truthy(smtp.message(spec{ subject = ("word "):rep(13000) }))
    end)

    it("a UTF-8 address in Reply-To (or From with an envelope override) makes the header need SMTPUTF8", function()
      local m = build{ reply_to = "j\195\182rg@example.net" }
      assert.is_true(m.utf8_headers)
      m = build{ from = "j\195\182rg@example.net",
                 envelope = { from = "bounce@example.org", to = { "rcpt@example.net" } } }
      assert.is_true(m.utf8_headers)
      assert.is_false(build{}.utf8_headers)
      -- a UTF-8 display name is an encoded word: nothing to declare
      assert.is_false(build{ from = "J\195\182rg <jorg@example.org>" }.utf8_headers)
    end)
  end)

  describe("structure", function()
    local img = { filename = "logo.png", content = "\137PNG\0", content_id = "logo@example.com" }

    local function structure(s)
      local out = {}
      for t in s:gmatch("Content%-Type: ([%w%-]+/[%w%-%.%+]+)") do out[#out + 1] = t end
      return table.concat(out, " ")
    end

    it("html with inline cid parts -> multipart/related with type=text/html", function()
      local s = text_of{ text = false, html = '<img src="cid:logo@example.com">', attachments = { img } }
      assert.equal("multipart/related text/html image/png", structure(s))
      assert.truthy(s:find('Content-Type: multipart/related; type="text/html";', 1, true))
      assert.truthy(s:find("Content-Disposition: inline; filename=\"logo.png\"\r\nContent-ID: <logo@example.com>",
        1, true))
    end)

    it("text + html + inline + regular -> mixed(alternative(text, related(html, img)), pdf)", function()
      local s = text_of{ html = "<p>x</p>", attachments = { img, { filename = "r.pdf", content = "%PDF" } } }
      assert.equal("multipart/mixed multipart/alternative text/plain multipart/related text/html image/png "
        .. "application/pdf", structure(s))
    end)

    it("inline parts without html are attachments that keep their Content-ID", function()
      local s = text_of{ attachments = { img } }
      assert.equal("multipart/mixed text/plain image/png", structure(s))
      assert.truthy(s:find("Content-Disposition: attachment; filename=\"logo.png\"\r\nContent-ID: <logo@example.com>",
        1, true))
    end)

    it("a cid part marked as attachment stays out of related", function()
      local s = text_of{ html = "<p/>", text = false,
                         attachments = { { filename = "a.png", content = "x", content_id = "a@b",
                                           disposition = "attachment" } } }
      assert.equal("multipart/mixed text/html image/png", structure(s))
    end)

    it("only attachments -> multipart/mixed of the attachments", function()
      local s = text_of{ text = false, attachments = { { filename = "a.txt", content = "x" } } }
      assert.equal("multipart/mixed text/plain", structure(s))
      assert.equal(1, #leaf_parts(s))
    end)

    it("random values come from OpenSSL's generator: hex, distinct, bounded", function()
      local seen = {}
      for _ = 1, 200 do
        local h = mime.random_hex(12)
        assert.equal(24, #h)
        assert.truthy(h:match("^[0-9a-f]+$"), h)
        assert.is_nil(seen[h], "a 96-bit value repeated")
        seen[h] = true
      end
      assert.equal(128, #core.random_hex(64))
      assert.has_error(function() core.random_hex(0) end)
      assert.has_error(function() core.random_hex(65) end)
      -- two processes (as two nginx workers would be) draw different values
      local cmd = "lua5.4 -e 'package.cpath=\"./build/lua5.4/?.so;\"..package.cpath; " ..
        "io.write(require(\"smtp.core\").random_hex(16))' 2>/dev/null"
      local function draw()
        local f = io.popen(cmd)
        local out = f:read("*a")
        f:close()
        return out
      end
      local one, two = draw(), draw()
      if #one == 32 then
        assert.are_not.equal(one, two)
      end
    end)

    it("boundaries are random and never occur in a part", function()
      local a, b = text_of{ html = "<p/>" }, text_of{ html = "<p/>" }
      assert.are_not.equal(a:match('boundary="([^"]+)"'), b:match('boundary="([^"]+)"'))
      -- A body that holds the first boundary drawn forces another draw.
      local real = mime.random_hex
      local draws = { "000000000000000000000000", "111111111111111111111111" }
      local n = 0
      mime.random_hex = function(k)
        n = n + 1
        return draws[n] or real(k)
      end
      local ok, s = pcall(text_of, { text = "--=_000000000000000000000000\n", html = "<p/>" })
      mime.random_hex = real
      assert.is_true(ok, s)
      assert.truthy(s:find('boundary="=_111111111111111111111111"', 1, true))
    end)
  end)

  describe("size and streaming", function()
    it("size is the exact number of octets the source yields", function()
      local specs = {
        {},
        { text = "Grüße\n" .. string.rep("long line ", 200) },
        { html = "<p>Ä</p>", attachments = { { filename = "a.bin", content = string.rep("\0\255", 1000) } } },
      }
      for n = 0, 10 do
        specs[#specs + 1] = { attachments = { { path = tmpfile(string.rep("z", n)), filename = "f" } } }
      end
      for _, n in ipairs({ 56, 57, 58, 59, 60, 65535, 65536, 65537, 200000 }) do
        specs[#specs + 1] = { attachments = { { path = tmpfile(string.rep("q", n)), filename = "f" } } }
      end
      for i, extra in ipairs(specs) do
        local m = build(extra)
        assert.equal(#m:tostring(), m.size, "case " .. i)
        for _, att in ipairs(extra.attachments or {}) do if att.path then os.remove(att.path) end end
      end
    end)

    it("base64_size matches core.b64encode", function()
      for n = 0, 300 do
        assert.equal(#core.b64encode(string.rep("x", n), 76), mime.base64_size(n), n)
      end
    end)

    it("streams a file attachment block by block, reading it only when its turn comes", function()
      local data = {}
      for i = 1, 300000 do data[i] = string.char(i % 251) end
      data = table.concat(data)
      local path = tmpfile(data)
      local m = build{ attachments = { { path = path } } }
      local src = m:source()
      local chunks, biggest, total = {}, 0, 0
      while true do
        local c, err = src()
        assert.is_nil(err)
        if not c then break end
        chunks[#chunks + 1] = c
        total = total + #c
        if #c > biggest then biggest = #c end
      end
      assert.equal(m.size, total)
      assert.is_true(#chunks >= 5)
      assert.is_true(biggest <= 90000)   -- one 64 KiB block, base64 with line ends
      local body = leaf_parts(table.concat(chunks))[2].body
      assert.equal(data, core.b64decode(body))
      os.remove(path)
    end)

    it("each source starts over", function()
      local m = build{ html = "<p/>" }
      assert.equal(m:tostring(), m:tostring())
    end)

    it("fails the source when a file vanished or changed size since the message was built", function()
      local path = tmpfile("12345")
      local m = build{ attachments = { { path = path } } }
      local f = assert(io.open(path, "ab"))
      f:write("678")
      f:close()
      local s, err = m:tostring()
      assert.is_nil(s)
      assert.matches("changed size", err)
      os.remove(path)
      s, err = m:tostring()
      assert.is_nil(s)
      assert.matches("^attachment ", err)
      -- A failed source stays failed.
      local src = m:source()
      local a, e1 = src()
      while a do a, e1 = src() end
      assert.is_string(e1)
      local b, e2 = src()
      assert.is_nil(b)
      assert.equal(e1, e2)
    end)
  end)
end)
