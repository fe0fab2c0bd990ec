-- bench/dkim.lua N_MSGS BODY_MB: the cost of DKIM signing, CPU seconds of
-- this process (os.clock), the message fully produced each time (signing
-- reads it once more, so both are counted):
--   per 1 KB composed message, unsigned, rsa-sha256 (2048 bits), ed25519-sha256
--   per MB of body (a raw message of BODY_MB MB), unsigned and signed
-- Keys are made with openssl into a temporary folder. Prints RESULT lines:
--   RESULT case=<name> unit=<us_per_msg|ms_per_mb> value=<number>
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local root = here .. "/.."
package.path = root .. "/lua/?.lua;" .. root .. "/?.lua;" .. package.path
package.cpath = root .. "/build/" .. (os.getenv("LUA") or _VERSION:gsub("Lua ", "lua")) .. "/?.so;" ..
  package.cpath
local job = require "smtp.job"
local util = require "spec.support.util"

local N = tonumber(arg[1]) or 2000
local MB = tonumber(arg[2]) or 20

local dir = util.mkdtemp("lua-smtp-bench-dkim")
local keys = {
  rsa = assert(util.read_file(util.openssl_key(dir .. "/rsa.pem", "rsa"))),
  ed = assert(util.read_file(util.openssl_key(dir .. "/ed.pem", "ed25519"))),
}
util.remove_tree(dir)

local SIGNERS = {
  unsigned = false,
  ["rsa-sha256"] = { domain = "example.org", selector = "s", key = keys.rsa },
  ["ed25519-sha256"] = { domain = "example.org", selector = "s", key = keys.ed, algorithm = "ed25519-sha256" },
}

local function drain(j)
  local n = 0
  for chunk in j.source do n = n + #chunk end
  return n
end

local text = ("0123456789 abcdefghij ABCDEFGHIJ klmnopqrst\n"):rep(22)   -- about 1 KB
for _, name in ipairs({ "unsigned", "rsa-sha256", "ed25519-sha256" }) do
  local t0 = os.clock()
  for i = 1, N do
    local j = assert(job.prepare({ from = "a@example.org", to = "b@example.net", subject = "m " .. i,
      text = text, dkim = SIGNERS[name] or nil }))
    drain(j)
  end
  print(string.format("RESULT case=1KB-%s unit=us_per_msg value=%.1f", name, (os.clock() - t0) / N * 1e6))
end

local body = ("x"):rep(70) .. "\r\n"
local raw = "From: a@example.org\r\nTo: b@example.net\r\nSubject: big\r\n\r\n" .. body:rep(MB * 1048576 // #body)
for _, name in ipairs({ "unsigned", "rsa-sha256", "ed25519-sha256" }) do
  local t0 = os.clock()
  local j = assert(job.prepare({ envelope = { from = "a@example.org", to = { "b@example.net" } },
    message = raw, dkim = SIGNERS[name] or nil }))
  drain(j)
  print(string.format("RESULT case=MB-%s unit=ms_per_mb value=%.2f", name, (os.clock() - t0) / MB * 1e3))
end
