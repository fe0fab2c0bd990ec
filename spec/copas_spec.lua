-- transport = "copas": the sends yield to copas's loop (spec/support/evloop.lua).
-- Debian's lua-copas installs for Lua 5.1 and 5.2 only: run it as
-- lua5.1 /usr/bin/busted spec/copas_spec.lua (or luajit); elsewhere pending.
require("spec.support.evloop").describe("copas", {
  describe = describe, it = it, setup = setup, teardown = teardown, assert = assert,
  pending = function(...) return pending(...) end,  -- busted binds pending per test: looked up then
})
