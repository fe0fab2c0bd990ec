-- The load test's short run (load/loadtest.lua; make load runs 20,000):
-- nginx workers with pooled cosocket sessions send one message per HTTP
-- request into a private Postfix that delivers to files; every request's
-- reported result is matched with the delivered files by Message-ID.
-- Pending without root, Postfix, Dovecot, nginx with the Lua module or
-- python3. The run does not depend on the interpreter running the specs
-- (everything happens in nginx, Postfix and the helper processes): it runs
-- under Lua 5.4 only, not again in the runtime matrix.
local loadtest = require "load.loadtest"

describe("#load nginx workers into Postfix, exact accounting (short run)", function()
  local available, why = loadtest.available()
  if available and (_VERSION ~= "Lua 5.4" or rawget(_G, "jit")) then
    available, why = false, "runs under Lua 5.4 only (it does not depend on the interpreter)"
  end
  if not available then
    it("needs root, Postfix, nginx with the Lua module and python3", function()
      pending("skipped: " .. tostring(why))
    end)
    return
  end

  it("300 requests clean, 300 through a proxy that resets connections: every message accounted for", function()
    local reports = loadtest.run{ n = 300, c = 30, workers = 2, runs = { "clean", "reset" },
      reset_share = 0.05, print = function(s) io.stderr:write(s, "\n") end }
    local clean, reset = reports[1], reports[2]
    assert.equal(0, clean.violations, clean.text)
    assert.equal(0, clean.gen.failed, clean.text)
    assert.equal(300, clean.accepted_once, clean.text)
    assert.is_true(clean.drained, clean.text)
    assert.equal(0, reset.violations, reset.text)
    assert.equal(0, reset.gen.failed, reset.text)
    assert.is_true(reset.drained, reset.text)
    assert.is_true(reset.injected > 0, "no fault injected: " .. reset.text)
    -- every request ended in one of the three honest outcomes
    assert.equal(300, reset.accepted_once + reset.not_sent_none + reset.unknown[0] + reset.unknown[1],
      reset.text)
    -- pooled sessions were used at all
    assert.is_true(clean.reused > 0, clean.text)
  end)
end)
