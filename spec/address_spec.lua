-- smtp.address: RFC 5322 address parsing and formatting.
local address = require "smtp.address"
local core = require "smtp.core"

-- parse() must succeed; returns the entries.
local function parse(s)
  local list, err = address.parse(s)
  assert(list, err)
  return list
end

local function mailbox(name, addr) return { name = name, address = addr } end

-- Decodes RFC 2047 words (UTF-8, B or Q) as a reader does.
local decode_words = require("spec.support.util").decode_words

-- Every line of a folded value (first line counted from col).
local function lines_of(value, col)
  local out, first = {}, true
  for line in (value .. "\r\n"):gmatch("(.-)\r\n") do
    out[#out + 1] = { text = line, width = #line + (first and col or 0) }
    first = false
  end
  return out
end

describe("smtp.address", function()
  describe("parse", function()
    it("reads a bare addr-spec and an angle address with a name", function()
      assert.same({ mailbox(nil, "ann@example.com") }, parse("ann@example.com"))
      assert.same({ mailbox("Ann Smith", "ann@example.com") }, parse("Ann Smith <ann@example.com>"))
      assert.same({ mailbox(nil, "ann@example.com") }, parse("<ann@example.com>"))
      assert.same({ mailbox(nil, "ann@example.com") }, parse("  ann@example.com  "))
    end)

    it("reads quoted display names with commas, quotes and backslashes", function()
      assert.same({ mailbox("Doe, John", "jd@example.com"), mailbox(nil, "b@example.org") },
        parse('"Doe, John" <jd@example.com>, b@example.org'))
      assert.same({ mailbox('Ann "the Brave" \\o/', "a@x.org") },
        parse('"Ann \\"the Brave\\" \\\\o/" <a@x.org>'))
      assert.same({ mailbox("a <b@c> d", "e@f.org") }, parse('"a <b@c> d" <e@f.org>'))
    end)

    it("keeps the dots of an unquoted name (obs-phrase)", function()
      assert.same({ mailbox("John Q. Public", "jqp@example.com") }, parse("John Q. Public <jqp@example.com>"))
    end)

    it("takes a comment as the name when there is no display name", function()
      assert.same({ mailbox("Bob Smith", "bob@x.org") }, parse("bob@x.org (Bob Smith)"))
      assert.same({ mailbox("Bob", "bob@x.org") }, parse("(Bob) bob@x.org"))
    end)

    it("drops comments anywhere else, nested ones included", function()
      assert.same({ mailbox("Ann", "ann@x.org") }, parse("Ann <ann@x.org> (work (main))"))
      assert.same({ mailbox(nil, "ann@x.org"), mailbox("C", "c@x.org") },
        parse("ann(home)@x.org (), c@x.org (C)"))
    end)

    it("keeps groups, empty ones included", function()
      assert.same({ { group = "undisclosed-recipients", members = {} } }, parse("undisclosed-recipients:;"))
      assert.same({
        { group = "Friends", members = { mailbox(nil, "a@b.org"), mailbox("X Y", "d@e.org") } },
        mailbox(nil, "z@q.org"),
      }, parse('Friends: a@b.org, "X Y" <d@e.org>;, z@q.org'))
      assert.same({ { group = "Team A", members = { mailbox(nil, "a@b.org") } },
                    { group = "B", members = {} } }, parse("Team A: a@b.org;, B:;"))
    end)

    it("flattens groups for parse_list and normalize", function()
      assert.same({ mailbox(nil, "a@b.org"), mailbox(nil, "c@d.org") },
        address.parse_list("G: a@b.org;, c@d.org, empty:;"))
      assert.same({ mailbox(nil, "a@b.org") }, address.normalize({ "G: a@b.org;" }))
    end)

    it("writes the local part canonically: dot-atom when it is one, else quoted", function()
      assert.same({ mailbox(nil, "john.doe@x.org") }, parse('john."doe"@x.org'))
      assert.same({ mailbox(nil, '"john doe"@x.org') }, parse('"john doe"@x.org'))
      assert.same({ mailbox(nil, '"john..doe"@x.org') }, parse("john..doe@x.org"))
      assert.same({ mailbox(nil, '"a\\"b"@x.org') }, parse('"a\\"b"@x.org'))
    end)

    it("reads domain literals, UTF-8 addresses and old source routes", function()
      assert.same({ mailbox(nil, "a@[192.0.2.1]") }, parse("a@[192.0.2.1]"))
      assert.same({ mailbox("Jörg", "jörg@bücher.de") }, parse("Jörg <jörg@bücher.de>"))
      assert.same({ mailbox(nil, "u@h.org") }, parse("<@relay1.org,@relay2.org:u@h.org>"))
    end)

    it("skips empty list elements", function()
      assert.same({ mailbox(nil, "a@b.org"), mailbox(nil, "d@e.org") }, parse(", a@b.org, , d@e.org,"))
      assert.same({}, parse(""))
    end)

    it("refuses what is not an address, saying why", function()
      local cases = {
        { "bob", "missing '@'" },
        { "@x.org", "missing local part" },
        { "a@", "invalid domain" },
        { "a@b..org", "invalid domain" },
        { "a@.org", "invalid domain" },
        { "john doe@x.org", "unquoted space" },
        { '"unclosed <a@b.org>', "unclosed quoted string" },
        { "a@b.org (unclosed", "unclosed comment" },
        { "Ann <a@b.org", "expected '>'" },
        { "Ann <a@b.org> x", "expected ','" },
        { "G: a@b.org", "closing ';'" },
        { "G: H: a@b.org;;", "" },
        { "a@b.org\r\nBcc: evil@x.org", "control characters" },
        { "a@b.org\0", "control characters" },
        { "a@b.org\n", "control characters" },
        { "a)b@c.org", "unexpected ')'" },
        { "a@[1.2.3.4", "unclosed domain literal" },
      }
      for _, c in ipairs(cases) do
        local list, err = address.parse(c[1])
        assert.is_nil(list, c[1])
        assert.is_string(err)
        assert.truthy(err:find(c[2], 1, true), c[1] .. " -> " .. err)
      end
    end)
    it("completes a mailbox without a domain with local_domain (sendmail's 'root'), and only then", function()
      assert.same({ mailbox(nil, "root@host.example") }, address.parse("root", "host.example"))
      assert.same({ mailbox("Cron Daemon", "root@host.example") },
        address.parse("root (Cron Daemon)", "host.example"))
      assert.same({ mailbox("Cron", "root@host.example"), mailbox(nil, "b@y.org") },
        address.parse("Cron <root>, b@y.org", "host.example"))
      assert.same({ mailbox(nil, "a@x.org") }, address.parse("a@x.org", "host.example"))
      assert.same({ mailbox(nil, "root@host.example") }, address.parse_list("root", "host.example"))
      assert.is_nil(address.parse("root"))
      assert.is_nil(address.parse("john doe", "host.example"))
      assert.is_nil(address.parse("root", "bad..domain"))
    end)
  end)

  describe("entries", function()
    it("takes strings, mailbox tables, group tables and arrays of them", function()
      assert.same({}, address.entries(nil))
      assert.same({ mailbox("Ann", "a@x.org") }, address.entries({ name = "Ann", address = "a@x.org" }))
      assert.same({ mailbox("Ann", "a@x.org"), mailbox(nil, "b@y.org"), mailbox(nil, "c@y.org") },
        address.entries({ { name = "Ann", address = "a@x.org" }, "b@y.org, c@y.org" }))
      assert.same({ { group = "T", members = { mailbox(nil, "a@x.org"), mailbox("B", "b@x.org") } } },
        address.entries({ group = "T", members = { "a@x.org", { name = "B", address = "b@x.org" } } }))
      assert.same({ mailbox("From Parse", "a@x.org") }, address.entries({ address = "From Parse <a@x.org>" }))
    end)

    it("refuses bad tables: two addresses, CR/LF in the name, wrong types, nested groups", function()
      local bad = {
        { address = "a@x.org, b@x.org" },
        { name = "Ann\r\nBcc: evil@x.org", address = "a@x.org" },
        { name = 42, address = "a@x.org" },
        { address = 42 },
        { group = "T", members = { "G: a@x.org;" } },
        { group = "", members = {} },
        42,
      }
      for _, v in ipairs(bad) do
        local list, err = address.entries(v)
        assert.is_nil(list)
        assert.is_string(err)
      end
    end)
  end)

  describe("format", function()
    it("writes a name as atoms when it is only words, else as a quoted string", function()
      assert.equal("Ann Smith <a@x.org>", address.format(mailbox("Ann Smith", "a@x.org")))
      assert.equal('"Doe, John" <a@x.org>', address.format(mailbox("Doe, John", "a@x.org")))
      assert.equal('"John Q. Public" <a@x.org>', address.format(mailbox("John Q. Public", "a@x.org")))
      assert.equal('"ann@home" <a@x.org>', address.format(mailbox("ann@home", "a@x.org")))
      assert.equal('"Ann \\"the\\" \\\\ Best" <a@x.org>', address.format(mailbox('Ann "the" \\ Best', "a@x.org")))
      assert.equal('" Ann  Two " <a@x.org>', address.format(mailbox(" Ann  Two ", "a@x.org")))
      assert.equal("a@x.org", address.format(mailbox(nil, "a@x.org")))
      assert.equal("a@x.org", address.format(mailbox("", "a@x.org")))
    end)

    it("encodes a non-ASCII name as RFC 2047 words and never the address", function()
      local s = address.format(mailbox("Jörg Müller", "jörg@bücher.de"))
      assert.matches("^=%?UTF%-8%?[BQ]%?[^ ]+%?= <jörg@bücher.de>$", s)
      -- A name that looks like an encoded word is encoded too, so that no
      -- reader decodes what the caller wrote literally.
      assert.matches("^=%?UTF%-8%?", address.format(mailbox("=?utf-8?q?x?=", "a@x.org")))
      -- Control characters other than CR/LF never appear raw.
      assert.matches("^=%?UTF%-8%?", address.format(mailbox("a\tb\1", "a@x.org")))
    end)

    it("encodes only the words that need it, so the ASCII words between stay atoms", function()
      local s = address.format(mailbox("Ünïcode Name Ünïcode Name", "a@x.org"))
      assert.matches("^=%?UTF%-8%?[BQ]%?[^ ]+%?= Name =%?UTF%-8%?[BQ]%?[^ ]+%?= Name <a@x%.org>$", s)
      assert.equal("Ünïcode Name Ünïcode Name <a@x.org>", decode_words(s))
      -- Irregular spacing is kept by encoding the whole name.
      s = address.format(mailbox("Ünï  Name ", "a@x.org"))
      assert.equal("Ünï  Name  <a@x.org>", decode_words(s))
    end)

    it("splits a long run of encoded words at spaces, each space inside the word before it", function()
      local name = string.rep("Jörg-Müller Lüdenscheidt, ", 8) .. "Ëxtra"
      local s = address.format(mailbox(name, "j@x.de"), 4)
      local words = {}
      for w in s:gmatch("=%?UTF%-8%?[BQ]%?.-%?=") do words[#words + 1] = decode_words(w) end
      assert.is_true(#words > 3)
      for i = 1, #words - 1 do assert.matches("^[^ ].* $", words[i]) end
      assert.equal(name .. " <j@x.de>", decode_words((s:gsub("\r\n", ""))))
      for _, l in ipairs(lines_of(s, 4)) do assert.is_true(l.width <= 78, l.text) end
    end)

    it("Q-encodes names with only phrase-safe characters", function()
      local s = address.format(mailbox("Ann, (Ä) \"x\"", "a@x.org"))
      local word = s:match("^(=%?UTF%-8%?Q%?(.-)%?=) <")
      if word then
        assert.is_nil(word:sub(11, -3):find('[,()"<>@;:%.]'))
      end
    end)

    it("writes groups, empty ones as name:;", function()
      assert.equal("undisclosed-recipients:;",
        address.format_list({ { group = "undisclosed-recipients", members = {} } }, 4))
      assert.equal('Team: a@x.org, "B, C" <b@x.org>;, d@y.org',
        address.format_list({ { group = "Team", members = { mailbox(nil, "a@x.org"), mailbox("B, C", "b@x.org") } },
                              mailbox(nil, "d@y.org") }, 4))
    end)

    it("folds a long list at 78 columns between and inside mailboxes, never inside an address", function()
      local entries = {}
      for i = 1, 12 do
        entries[#entries + 1] = mailbox("Person Number " .. i .. ", Esq.", "person" .. i .. "@example.com")
        entries[#entries + 1] = mailbox("Ünïcödé Pérson " .. i .. " with a long name", "u" .. i .. "@example.com")
      end
      local value = address.format_list(entries, 4)
      for _, l in ipairs(lines_of(value, 4)) do
        assert.is_true(l.width <= 78, l.text)
      end
      assert.is_nil(value:find("\r\n[^ ]"))
      -- Every address is whole on one line.
      for _, e in ipairs(entries) do assert.truthy(value:find("<" .. e.address .. ">", 1, true)) end
      -- Unfolded, the plain names read back.
      local back = address.parse_list((value:gsub("\r\n", "")))
      assert.equal(#entries, #back)
      assert.equal("Person Number 1, Esq.", back[1].name)
      assert.equal("person12@example.com", back[23].address)
    end)

    it("encodes a name with a word longer than a line instead of overflowing", function()
      local s = address.format(mailbox(string.rep("x", 200), "a@x.org"), 4)
      for _, l in ipairs(lines_of(s, 4)) do assert.is_true(l.width <= 78, l.text) end
    end)

    it("round-trips through parse for ASCII names", function()
      for _, name in ipairs({ "Ann", "Doe, John", 'Q "x" \\', "a.b", "(c)", "<x>", "x:y;z" }) do
        local back = parse(address.format(mailbox(name, "a@x.org")))
        assert.same({ mailbox(name, "a@x.org") }, back)
      end
    end)

    it("writes addresses the engine accepts", function()
      for _, m in ipairs(address.normalize('"a b"@x.org, x@[1.2.3.4], c@d.org')) do
        assert.is_true(core.valid_address(m.address))
      end
    end)
  end)

  it("domain() returns the right-hand side, without literal brackets", function()
    assert.equal("example.com", address.domain("a@example.com"))
    assert.equal("192.0.2.1", address.domain("a@[192.0.2.1]"))
    assert.equal("x.org", address.domain('"a@b"@x.org'))
  end)
end)
