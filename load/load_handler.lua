-- The load test's endpoints, inside nginx (load/nginx.conf.in).
--   /send?run=R&id=N&port=P[&timeout=S&pool=K]: one message through
--     smtp.connect (a pooled session when one is there) and s:send, with
--     the unique Message-ID <R.N@load.lua-smtp.test>; a healthy session
--     goes back to the pool (s:setkeepalive). What the library reported
--     goes to results.log (the access log) as one line:
--       run id outcome stage kind reused retried_stale milliseconds
--     outcome: accepted | not_sent | unknown (stage data_end: the server may
--     or may not have taken it).
--   /ping: answers at once (the workers' responsiveness under load).
local smtp = require "smtp"

local M = {}

local function arg(name, default)
  local v = ngx.var["arg_" .. name]
  if v == nil or v == "" then return default end
  return v
end

local TEXT = ("The load test's body: one line of text, repeated.\n"):rep(20)

local function reply(body)
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

function M.send()
  local run, id = arg("run", "run"), arg("id", "0")
  local pool_size = tonumber(arg("pool", "100"))
  local t0 = ngx.now()
  local outcome, stage, kind, reused, retried = "not_sent", "-", "-", false, false
  local s, err, info = smtp.connect{
    host = "127.0.0.1", port = tonumber(arg("port", "25")), tls = "none",
    helo = "load.lua-smtp.test", timeout = tonumber(arg("timeout", "5")), pool_size = pool_size,
  }
  if not s then
    stage, kind = tostring(info and info.stage), tostring(info and info.kind)
  else
    reused = s.reused == true
    local res, serr, sinfo = s:send{
      from = "load@lua-smtp.test", to = "sink@example.net",
      subject = "load " .. run .. " " .. id, text = TEXT,
      message_id = "<" .. run .. "." .. id .. "@load.lua-smtp.test>",
    }
    err = serr
    if res then
      outcome, retried = "accepted", res.retried_stale == true
      s:setkeepalive(10, pool_size)
    else
      stage, kind = tostring(sinfo and sinfo.stage), tostring(sinfo and sinfo.kind)
      retried = sinfo and sinfo.retried_stale == true
      outcome = stage == "data_end" and "unknown" or "not_sent"
      s:close()
    end
  end
  ngx.update_time()
  local line = string.format("%s %s %s %s %s %d %d %d", run, id, outcome, stage, kind,
    reused and 1 or 0, retried and 1 or 0, math.floor((ngx.now() - t0) * 1000 + 0.5))
  ngx.var.load_result = line
  reply(line .. (err and ("\n" .. err) or "") .. "\n")
end

function M.ping()
  reply("pong\n")
end

return M
