-- The documentation cannot rot: every ```lua example of README.md,
-- HACKING.md and docs/*.md runs, each in its own process, against the
-- debug server (bin/smtp-debug-server), or a scripted server offering AUTH
-- for calls with a user. spec/support/docs_prelude.lua adapts host, port
-- and TLS options without touching the example's text; the examples run in
-- a scratch directory holding the files they name (HACKING.md, "The
-- documentation's examples"). An example that cannot run is marked with
-- <!-- example: skip (reason) --> on the line after its closing fence and
-- shows as pending. Also: README.md has at most 250 lines, and every
-- relative link between these files resolves.
local servers = require "spec.support.servers"
local util = require "spec.support.util"

local README_MAX_LINES = 250

local function read(path) return assert(util.read_file(path)) end
local write, sh_quote, lines_of = util.write_file, util.shell_quote, util.lines

-- ---- the documents and their examples -----------------------------------------------

local function doc_files()
  local files = { "README.md", "HACKING.md" }
  local p = assert(io.popen("ls docs/*.md"))
  for name in p:lines() do files[#files + 1] = name end
  p:close()
  return files
end

-- Every ```lua block: { file, line, code, skip = reason|nil }, and the
-- marks that are malformed.
local function examples_in(file)
  local out, bad = {}, {}
  local lines = lines_of(read(file))
  local i = 1
  while i <= #lines do
    if lines[i]:match("^```lua%s*$") then
      local start, code = i, {}
      i = i + 1
      while i <= #lines and not lines[i]:match("^```%s*$") do
        code[#code + 1] = lines[i]
        i = i + 1
      end
      local ex = { file = file, line = start, code = table.concat(code, "\n") .. "\n" }
      local mark = lines[i + 1] and lines[i + 1]:match("^<!%-%-%s*example:(.-)%-%->%s*$")
      if mark then
        local reason = mark:match("^%s*skip%s*%((.-%S.-)%)%s*$")
        if reason then ex.skip = reason else bad[#bad + 1] = file .. ":" .. (i + 1) .. ": " .. mark end
      end
      out[#out + 1] = ex
    elseif lines[i]:match("^<!%-%-%s*example:") and not (lines[i - 1] or ""):match("^```%s*$") then
      bad[#bad + 1] = file .. ":" .. i .. ": a mark that does not follow a closing fence"
    end
    i = i + 1
  end
  return out, bad
end

local FILES = doc_files()
local EXAMPLES, BAD_MARKS = {}, {}
for _, f in ipairs(FILES) do
  local ex, bad = examples_in(f)
  for _, e in ipairs(ex) do EXAMPLES[#EXAMPLES + 1] = e end
  for _, b in ipairs(bad) do BAD_MARKS[#BAD_MARKS + 1] = b end
end
local SKIPPED = 0
for _, e in ipairs(EXAMPLES) do if e.skip then SKIPPED = SKIPPED + 1 end end

-- ---- the scratch directory -----------------------------------------------------------

-- The files the examples name, by a relative path. Keys are made for the
-- run with openssl.
local FIXTURES = {
  ["q3.pdf"] = "%PDF-1.4\n% a made-up report\n%%EOF\n",
  ["brand-guide.pdf"] = "%PDF-1.4\n% a made-up guide\n%%EOF\n",
  ["export-7.csv"] = "quarter,total\nq3,42\n",
  ["logo.png"] = "\137PNG\r\n\26\n" .. string.rep("\0\1\2\3", 64),
  ["message.eml"] = "From: a@example.com\r\nTo: b@example.com\r\nSubject: a raw message\r\n" ..
    "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <raw.1@example.com>\r\n\r\nHello.\r\n",
}

local INTERP = rawget(_G, "jit") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))

-- ---- links ---------------------------------------------------------------------------

-- GitHub's heading anchors: lower case, punctuation and symbols dropped,
-- spaces as hyphens, "-1", "-2" for repeats.
local function anchors(text)
  local set, seen, fenced = {}, {}, false
  for _, line in ipairs(lines_of(text)) do
    if line:match("^```") then fenced = not fenced end
    local title = not fenced and line:match("^#+%s+(.-)%s*$")
    if title then
      local a = title:lower()
      a = a:gsub("\226[\128-\175][\128-\191]", "")   -- U+2000..U+2BFF: punctuation, arrows, symbols
      a = a:gsub("[%p]", function(c) return (c == "-" or c == "_") and c or "" end)
      a = a:gsub(" ", "-")
      local n = seen[a]
      seen[a] = (n or 0) + 1
      set[n and (a .. "-" .. n) or a] = true
    end
  end
  return set
end

local exists = util.file_exists

local function normalise(path)
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." and #parts > 0 and parts[#parts] ~= ".." then
      parts[#parts] = nil
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  return table.concat(parts, "/")
end

-- ---- the specs -----------------------------------------------------------------------

describe("documentation #docs", function()
  it("README.md has at most " .. README_MAX_LINES .. " lines", function()
    local n = #lines_of(read("README.md"))
    assert.is_true(n <= README_MAX_LINES, "README.md has " .. n .. " lines")
  end)

  it("found " .. #EXAMPLES .. " Lua examples in " .. #FILES .. " files, " .. SKIPPED ..
     " marked skip, every mark well formed", function()
    assert.is_true(#EXAMPLES >= 20, "too few examples found: the extraction is broken")
    assert.is_true(SKIPPED <= 3, "skips should stay rare")
    assert.same({}, BAD_MARKS)
  end)

  it("every relative link between the files points to a file and a heading that exist", function()
    local broken = {}
    local files = { "CHANGELOG.md" }
    for _, f in ipairs(FILES) do files[#files + 1] = f end
    for _, file in ipairs(files) do
      local dir = file:match("^(.*)/") or ""
      local fenced = false
      for n, line in ipairs(lines_of(read(file))) do
        if line:match("^```") then fenced = not fenced end
        for target in (fenced and "" or line):gmatch("%]%(([^)%s]+)%)") do
          if not target:match("^%a[%w+.-]*:") then
            local path, anchor = target:match("^([^#]*)#?(.*)$")
            local full = path == "" and file or normalise((dir ~= "" and dir .. "/" or "") .. path)
            if not exists(full) then
              broken[#broken + 1] = file .. ":" .. n .. ": " .. target .. " (no file " .. full .. ")"
            elseif anchor ~= "" and not anchors(read(full))[anchor] then
              broken[#broken + 1] = file .. ":" .. n .. ": " .. target .. " (no heading #" .. anchor .. ")"
            end
          end
        end
      end
    end
    assert.same({}, broken)
  end)

  describe("examples", function()
    local root, scratch, dbg
    local base_env

    setup(function()
      root = util.root
      scratch = util.mkdtemp("lua-smtp-docs")
      for name, content in pairs(FIXTURES) do write(scratch .. "/" .. name, content) end
      util.openssl_key(scratch .. "/dkim-rsa.pem", "rsa")
      util.openssl_key(scratch .. "/dkim-ed25519.pem", "ed25519")
      dbg = servers.debug_server{ quiet = true }
      base_env = table.concat({
        "LUA_PATH=" .. sh_quote(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;"),
        "LUA_CPATH=" .. sh_quote(root .. "/build/" .. INTERP .. "/?.so;;"),
        "DOCS_DEBUG_PORT=" .. dbg.port,
      }, " ")
    end)

    teardown(function()
      if dbg then dbg:stop() end
      util.remove_tree(scratch)
    end)

    -- A scripted server that offers AUTH and takes any credentials, for
    -- calls with a user; serves up to 8 connections one after another.
    local function auth_server()
      local caps = { "PIPELINING", "8BITMIME", "SIZE 52428800", "ENHANCEDSTATUSCODES",
                     "AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER" }
      local ehlo = { "250-auth.test\r\n" }
      for i, c in ipairs(caps) do ehlo[#ehlo + 1] = "250" .. (i < #caps and "-" or " ") .. c .. "\r\n" end
      return servers.fake{ connections = 8, timeout = 60, steps = {
        { send = "220 auth.test ESMTP\r\n" }, { expect = "^EHLO " }, { send = table.concat(ehlo) },
        { serve = {
          { "^AUTH ", "235 2.7.0 Authentication successful\r\n" },
          { "^MAIL FROM:", "250 2.1.0 Ok\r\n" },
          { "^RCPT TO:", "250 2.1.5 Ok\r\n" },
          { "^DATA$", "354 End data with <CR><LF>.<CR><LF>\r\n", data = "250 2.0.0 Ok: queued\r\n" },
          { "^RSET$", "250 2.0.0 Ok\r\n" },
          { "^NOOP$", "250 2.0.0 Ok\r\n" },
          { "^QUIT$", "221 2.0.0 Bye\r\n", close = true },
        } },
      } }
    end

    -- Runs one example: status, output.
    local function run_example(ex, n, extra_env)
      local file = scratch .. "/example-" .. n .. ".lua"
      write(file, ex.code)
      local srv = ex.code:find("user%s*=") and auth_server()
      -- env's options (-u) come before its assignments.
      local env = extra_env .. " " .. base_env .. (srv and (" DOCS_AUTH_PORT=" .. srv.port) or "")
      local _, out, status = util.run("cd " .. sh_quote(scratch) .. " && env " .. env .. " timeout 60 " ..
        INTERP .. " " .. sh_quote(root .. "/spec/support/docs_prelude.lua") .. " " .. sh_quote(file))
      if srv then
        local errs = srv:errors()
        srv:stop()
        if errs:find("MISMATCH") then status, out = 99, out .. "\nauth server: " .. errs end
      end
      return status, out
    end

    local ENV = "SMTP_PASSWORD=app-password OAUTH_TOKEN=ya29.docs-example-token"

    for n, ex in ipairs(EXAMPLES) do
      it(ex.file .. ":" .. ex.line, function()
        if ex.skip then pending("example: skip (" .. ex.skip .. ")") return end
        local status, out = run_example(ex, n, ENV)
        assert.equal(0, status, ex.file .. ":" .. ex.line .. " failed:\n" .. out)
        assert.matches("DOCS%-EXAMPLE calls=%d+ failed=0", out)
      end)
    end

    it("README's example with SMTP_PASSWORD unset: an argument failure, no traceback", function()
      local ex
      for _, e in ipairs(EXAMPLES) do
        if e.file == "README.md" and e.code:find('os.getenv("SMTP_PASSWORD")', 1, true) then ex = e end
      end
      assert.is_table(ex, "README.md has no example with os.getenv(\"SMTP_PASSWORD\")")
      local status, out = run_example(ex, 0, "-u SMTP_PASSWORD DOCS_ALLOW_FAIL=1")
      assert.equal(0, status, out)
      assert.matches("argument: 'user' given without 'password'", out)
      assert.matches("DOCS%-EXAMPLE calls=1 failed=1", out)
    end)
  end)
end)
