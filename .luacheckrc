-- The library sticks to what Lua 5.1 through 5.4 and LuaJIT share.
std = "min"
max_line_length = 120
codes = true

files["spec"] = { std = "+busted" }
files["bin"] = { std = "min" }
files["examples"] = { std = "min" }
