-- transport = "cqueues": the sends yield to a cqueues controller
-- (spec/support/evloop.lua). Pending where cqueues is not installed.
require("spec.support.evloop").describe("cqueues", {
  describe = describe, it = it, setup = setup, teardown = teardown, assert = assert,
  pending = function(...) return pending(...) end,  -- busted binds pending per test: looked up then
})
