-- Runs one example of the documentation (spec/docs_spec.lua):
--
--   cd SCRATCH && LUA_PATH=... LUA_CPATH=... DOCS_DEBUG_PORT=n [DOCS_AUTH_PORT=n] \
--     lua ROOT/spec/support/docs_prelude.lua EXAMPLE.lua
--
-- The example sees `smtp` as a global (as if `local smtp = require "smtp"`
-- came first) and through require. That `smtp` is the library with one
-- adaptation, documented in HACKING.md: every smtp.send / smtp.connect goes
-- to 127.0.0.1 (the debug server's port, or DOCS_AUTH_PORT's scripted
-- server when the call has a user, with insecure_auth = true), with plain
-- SMTP (the TLS options are dropped). The example's own text is not
-- changed.
--
-- Exit status: 0 when the example ran and every send, connect and session
-- operation it made succeeded; 2 when it raised; 3 when a call failed
-- (unless DOCS_ALLOW_FAIL=1). Works with Lua 5.1 .. 5.4.

local example = assert(arg[1], "usage: docs_prelude.lua EXAMPLE.lua")
local real = require "smtp"

local debug_port = tonumber(os.getenv("DOCS_DEBUG_PORT"))
local auth_port = tonumber(os.getenv("DOCS_AUTH_PORT"))
local allow_fail = os.getenv("DOCS_ALLOW_FAIL") == "1"

local unpack = rawget(table, "unpack") or rawget(_G, "unpack")
local function pack(...) return { n = select("#", ...), ... } end

local failures, calls = {}, 0

local function record(what, ok, err)
  calls = calls + 1
  if not ok then failures[#failures + 1] = what .. ": " .. tostring(err) end
end

-- and the proxy: the debug server is reached directly
local TLS_OPTIONS = { "tls", "verify", "servername", "cafile", "capath", "cert", "key", "path", "proxy" }

-- The call's options, pointed at the local servers.
local function adapt(opts)
  if type(opts) ~= "table" then return opts end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  for _, k in ipairs(TLS_OPTIONS) do o[k] = nil end
  o.host, o.tls = "127.0.0.1", "none"
  if o.user ~= nil then
    o.port = assert(auth_port, "an example with a user needs DOCS_AUTH_PORT")
    o.insecure_auth = true
  else
    o.port = assert(debug_port, "DOCS_DEBUG_PORT is not set")
  end
  o.timeout = math.min(o.timeout or 10, 10)
  return o
end

local CHECKED = { send = true, sendmail = true, send_many = true, noop = true, rset = true,
                  setkeepalive = true }

local function wrap_session(s)
  local proxy = {}
  return setmetatable(proxy, {
    __index = function(_, k)
      local v = s[k]
      if type(v) ~= "function" then return v end
      return function(self, ...)
        if self == proxy then self = s end
        local r = pack(v(self, ...))
        if k == "send_many" and type(r[1]) == "table" then
          for i, e in ipairs(r[1]) do record("s:send_many entry " .. i, not e.error, e.error) end
        elseif CHECKED[k] then
          record("s:" .. k, r[1], r[2])
        end
        return unpack(r, 1, r.n)
      end
    end,
    __close = function() s:close() end,
  })
end

local smtp = setmetatable({
  send = function(opts)
    local r = pack(real.send(adapt(opts)))
    record("smtp.send", r[1], r[2])
    return unpack(r, 1, r.n)
  end,
  connect = function(opts)
    local s, err, info = real.connect(adapt(opts))
    record("smtp.connect", s, err)
    if not s then return nil, err, info end
    return wrap_session(s)
  end,
}, { __index = real })

package.loaded.smtp = smtp
rawset(_G, "smtp", smtp)

local chunk, lerr = loadfile(example)
if not chunk then
  io.stderr:write("example does not load: ", lerr, "\n")
  os.exit(2)
end
local ok, err = xpcall(chunk, debug.traceback)
io.stdout:flush()
if not ok then
  io.stderr:write("example raised: ", tostring(err), "\n")
  os.exit(2)
end
io.stdout:write("DOCS-EXAMPLE calls=", calls, " failed=", #failures, "\n")
for _, f in ipairs(failures) do io.stderr:write("failed call: ", f, "\n") end
if #failures > 0 and not allow_fail then os.exit(3) end
os.exit(0)
