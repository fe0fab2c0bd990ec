-- The manual of smtp-send (man/smtp-send.1) against the code: its EXIT
-- STATUS section is the one place where the exit statuses are documented,
-- and it must list exactly the table the CLI uses (EXIT_STATUS in
-- lua/smtp/cli/main.lua), code and name; the CLI must return no status
-- that is not in that table.

local cli = require "smtp.cli.main"
local util = require "spec.support.util"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."
local MAN = ROOT .. "/man/smtp-send.1"

local function read(path) return assert(util.read_file(path)) end
local lines = util.lines

-- The lines of the section called name (after its .SH line, up to the next .SH).
local function section(text, name)
  local out, inside = {}, false
  for _, line in ipairs(lines(text)) do
    if line:match("^%.SH ") then
      if inside then break end
      inside = line:gsub('"', "") == ".SH " .. name
    elseif inside then
      out[#out + 1] = line
    end
  end
  return out
end

-- { [code] = name } from the EXIT STATUS section: each entry is a .TP line
-- followed by '.BR CODE " (NAME)"'. Entries that do not have this shape
-- are returned in the second table.
local function documented_statuses(text)
  local sec = section(text, "EXIT STATUS")
  local found, bad, order = {}, {}, {}
  for i, line in ipairs(sec) do
    if line:match("^%.TP") then
      local tag = sec[i + 1] or ""
      local code, name = tag:match('^%.BR (%d+) " %(([%w_]+)%)"$')
      if code then
        code = tonumber(code)
        if found[code] then bad[#bad + 1] = "documented twice: " .. code end
        found[code] = name
        order[#order + 1] = code
      else
        bad[#bad + 1] = tag
      end
    end
  end
  return found, bad, order
end

-- The source files of the CLI: its modules and the script.
local function cli_sources()
  local files = { ROOT .. "/bin/smtp-send" }
  local p = io.popen("ls " .. ROOT .. "/lua/smtp/cli/*.lua")
  for path in p:lines() do files[#files + 1] = path end
  p:close()
  return files
end

describe("man/smtp-send.1", function()
  local text = read(MAN)
  local table_of = {}
  for _, status in ipairs(cli.EXIT_STATUS) do table_of[status[1]] = status[2] end

  it("documents in EXIT STATUS every status of the CLI's table, with its name, and no other", function()
    local found, bad, order = documented_statuses(text)
    assert.same({}, bad)
    assert.is_true(#order >= 10, "EXIT STATUS has too few entries to be the real list")
    for code, name in pairs(table_of) do
      assert.equal(name, found[code], "status " .. code .. " (" .. name .. ") is not documented as such")
    end
    for code, name in pairs(found) do
      assert.equal(name, table_of[code], "status " .. code .. " (" .. name .. ") is documented but not in the table")
    end
    -- listed in increasing order, as a reader looks them up
    for i = 2, #order do assert.is_true(order[i - 1] < order[i], "out of order: " .. order[i]) end
  end)

  it("names every status elsewhere in the page as the table does", function()
    local by_name = {}
    for code, name in pairs(table_of) do by_name[name] = code end
    for name in text:gmatch("EX_[%u_]+") do
      assert.is_not_nil(by_name[name], name .. " is mentioned but not in the table")
    end
    -- "(EX_CONFIG, 78)": the number said beside a name is the table's
    for name, code in text:gmatch("(EX_[%u_]+), (%d+)") do
      assert.equal(by_name[name], tonumber(code), name .. ", " .. code)
    end
  end)

  it("has a table that the CLI uses for every status it returns, and only statuses it returns", function()
    local EX = cli.EX
    local used = {}
    for _, path in ipairs(cli_sources()) do
      local src = read(path)
      for key in src:gmatch("EX%.([%u_]+)") do
        if key ~= "" then
          assert.is_not_nil(EX[key], path .. " uses EX." .. key .. ", which is not in the table")
          used[key] = true
        end
      end
      -- no status written as a number: a literal os.exit (bin/smtp-send,
      -- which cannot load the table when it fails) must be in the table
      -- under the name its comment gives
      for code, rest in src:gmatch("os%.exit%((%d+)%)([^\n]*)") do
        local name = table_of[tonumber(code)]
        assert.is_not_nil(name, path .. ": os.exit(" .. code .. ") is not in the table")
        assert.equal(name, rest:match("(EX_[%u_]+)"), path .. ": os.exit(" .. code .. ") says another name")
      end
      assert.is_nil(src:match("\n%s*return %d%d+"), path .. " returns a status as a number")
      assert.is_nil(src:match("die%(%d"), path .. " dies with a status written as a number")
    end
    for _, status in ipairs(cli.EXIT_STATUS) do
      local key = status[2]:gsub("^EX_", "")
      assert.equal(status[1], EX[key])
      assert.is_true(used[key] == true, "EX." .. key .. " (" .. status[1] .. ") is never returned: drop it")
    end
  end)

  it("renders without warnings", function()
    local found = os.execute("command -v groff >/dev/null 2>&1")
    if found ~= true and found ~= 0 then                   -- 5.2+: true; 5.1: 0
      pending("groff is not installed")
      return
    end
    local p = io.popen("groff -man -Tutf8 -ww -z " .. MAN .. " 2>&1")
    local warnings = p:read("*a")
    p:close()
    assert.equal("", warnings)
    p = io.popen("groff -man -Tutf8 -P-cbou " .. MAN .. " 2>/dev/null")
    local page = p:read("*a")
    p:close()
    for _, heading in ipairs{ "NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION FILE",
                              "ENVIRONMENT", "EXIT STATUS", "EXAMPLES", "SEE ALSO" } do
      assert.is_truthy(page:find("\n" .. heading .. "\n", 1, true), "no section " .. heading)
    end
  end)

  it("describes every long option the parser knows", function()
    local src = read(ROOT .. "/lua/smtp/cli/options.lua")
    local block = src:match("local long = (%b{})")
    assert.is_string(block)
    local names = {}
    for name in block:gmatch('%["([%w%-]+)"%]%s*=') do names[#names + 1] = name end
    for name in block:gmatch("[{,]%s*([%a_][%w_]*)%s*=%s*{") do names[#names + 1] = name end
    assert.is_true(#names >= 25, "found only " .. #names .. " options")
    for _, name in ipairs(names) do
      local roff = ("\\-\\-" .. name:gsub("%-", "\\-"))
      assert.is_truthy(text:find(roff, 1, true), "--" .. name .. " is not in the manual")
    end
  end)
end)
