-- luacheck config: `luacheck -q lua spec bin examples` (make lint).
-- /usr/bin/luacheck runs on Lua 5.1; the std settings below decide which
-- globals each file may use, whatever Lua runs luacheck.

-- The library sticks to what Lua 5.1 through 5.4 and LuaJIT share: "min"
-- is the intersection of lua51..lua54 and luajit (no setfenv, unpack,
-- table.unpack, utf8, jit, bit32 ...).
std = "min"
max_line_length = 120
codes = true
exclude_files = { "build/**", ".tree*/**", "lua_modules/**", ".luarocks/**" }

-- The OpenResty transport runs only inside nginx: ngx_lua's globals
-- (ngx, ndk, coroutine._yield ...) on top of LuaJIT's 5.1.
files["lua/smtp/transport/cosocket.lua"] = { std = "ngx_lua" }

files["spec"] = { std = "+busted" }
-- Request handlers that the specs' nginx loads: nginx code, not specs.
files["spec/support/nginx"] = { std = "ngx_lua" }
-- The load test's handler (load/), nginx code too.
files["load/load_handler.lua"] = { std = "ngx_lua" }

files["bin"] = { std = "min" }
files["examples"] = { std = "min" }
