-- engine-states.lua [SOURCE]: prints the engine's state diagram, as
-- Markdown tables, from the transition tables of csrc/smtp_engine.c (the
-- only moves its transition function allows; the C unit tests abort on any
-- other). spec/engine_spec.lua checks that every state and operation of
-- the header appears in them.
local path = arg[1] or "csrc/smtp_engine.c"
local f = assert(io.open(path, "rb"))
local src = f:read("*a")
f:close()

local function edges(name)
  local body = assert(src:match("/%* BEGIN " .. name .. " %*/(.-)/%* END " .. name .. " %*/"),
    "no table " .. name .. " in " .. path)
  local list = {}
  for from, to, when in body:gmatch('{SMTP_[A-Z]+_([A-Z_]+), SMTP_[A-Z]+_([A-Z_]+), "([^"]*)"}') do
    local function label(s) return s == "NONE" and "idle" or s:lower() end
    list[#list + 1] = { from = label(from), to = label(to), when = when }
  end
  assert(#list > 0, "empty table " .. name)
  return list
end

local function print_table(title, list)
  print("### " .. title .. "\n")
  print("| from | to | when |")
  print("|---|---|---|")
  for _, e in ipairs(list) do
    print(string.format("| %s | %s | %s |", e.from, e.to, e.when))
  end
  print()
end

print_table("Connection (smtp_state)", edges("state_edges"))
print_table("Operation (smtp_op)", edges("op_edges"))
