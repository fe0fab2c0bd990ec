-- (f) of make bench: N messages, each over a new verified STARTTLS
-- connection to a real Postfix (the test harness's private instance,
-- spec/support/postfix.lua: needs root, postfix and dovecot-core), by
--   lua-smtp  one process, N x smtp.send{ tls = "starttls", cafile = CA }
--             (and twice more: without session resumption, and keeping
--             nothing, i.e. a context built per connection, as before the
--             cache: what each saves on both sides)
--   smtplib   one process, N x SMTP() + starttls(context) with ONE
--             ssl.SSLContext made before the loop (as a careful user would)
--   curl      N processes: curl --ssl-reqd --cacert CA smtp://... -T msg
--   swaks     N processes: swaks --tls --tls-verify --tls-ca-path CA
-- in turn, REPS times (the clients alternate, so all see the same
-- conditions). The certificate names 127.0.0.1 (an iPAddress SAN), which
-- every client verifies. Placement: every Postfix and Dovecot process on
-- CPU 0 (taskset on the running processes; their children inherit it),
-- the client on CPU 1.
--
-- Prints per run:
--   RESULT client=<name> rep=<i> ok=<N or 0> msgps=<N / wall seconds>
--     client_cpu_ms=<user+sys per message> server_cpu_ms=<Postfix+Dovecot
--     CPU per message, queueing included> wall=<s>
-- wall is the whole client run (process start-up included, the same for
-- every client); a run counts only when the client reports every message
-- accepted (exit status 0) and Postfix's queue drained afterwards.
-- SKIP <why> when Postfix cannot run here.
--
-- Usage: lua5.4 bench/tls_bench.lua [N [REPS [CLIENTS]]]
--   CLIENTS: comma-separated subset of lua-smtp,lua-smtp-no-resumption,
--            lua-smtp-nothing-kept,smtplib,curl,swaks
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = "./build/" .. (os.getenv("LUA") or "lua5.4") .. "/?.so;" .. package.cpath

local core = require "smtp.core"
local postfix = require "spec.support.postfix"
local certs = require "spec.support.certs"
local util = require "spec.support.util"

local N = tonumber(arg[1]) or 200
local REPS = tonumber(arg[2]) or 3
local ONLY = arg[3]
local LUA = os.getenv("LUA") or "lua5.4"
local PY = os.getenv("PYTHON") or "/usr/bin/python3"
local SIZE = 1024
local CLIENT_CPU, SERVER_CPU = "1", "0"

local sh, have = util.shell_quote, util.which

if not postfix.available() then
  print("SKIP postfix or dovecot-core missing, or not root")
  os.exit(0)
end

local tmp = util.mkdtemp("lua-smtp-tlsbench")
local C = certs.make(tmp .. "/certs")
-- Messages are discarded once queued (Postfix's discard transport): the
-- harness's own delivery, a pipe to /bin/sh per message, would cost the
-- server more than the TLS handshakes this workload is about.
local pf = postfix.start{ certs_dir = C.dir, main = {
  default_transport = "discard", relay_transport = "discard", local_transport = "discard",
  virtual_transport = "discard", smtpd_tls_loglevel = 0 } }
local port = pf.ports.plain

-- The message every client sends (the same text as bench/lua_smtp_client.lua).
local msgfile = tmp .. "/msg.eml"
do
  local f = assert(io.open(msgfile, "wb"))
  local head = "From: bench <a@x.test>\r\nTo: <b@y.test>\r\nSubject: bench\r\n\r\n"
  local line = string.rep("x", 70) .. "\r\n"
  f:write(head, string.rep(line, math.floor((SIZE - #head) / #line)))
  f:close()
end

local function cleanup()
  pf:stop()
  util.remove_tree(tmp)
end

-- Every server process on SERVER_CPU; processes forked later inherit it.
for _, pid in ipairs(pf:pids()) do
  os.execute("taskset -a -cp " .. SERVER_CPU .. " " .. pid .. " >/dev/null 2>&1")
end

local TICK = 100 -- USER_HZ on Linux
-- CPU seconds of the server so far: every live process's own time, plus
-- the children each has reaped (Postfix's master reaps smtpd, cleanup,
-- pipe, ...), so exited processes still count.
local function server_cpu()
  local total = 0
  for _, pid in ipairs(pf:pids()) do
    local f = io.open("/proc/" .. pid .. "/stat")
    if f then
      local st = f:read("*a")
      f:close()
      local rest = st:match("%) (.*)$")
      if rest then
        local fields = {}
        for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
        -- after "pid (comm)": state is field 3, utime 14 .. cstime 17
        for i = 12, 15 do total = total + (tonumber(fields[i]) or 0) end
      end
    end
  end
  return total / TICK
end

-- Messages still in Postfix's queue (incoming, active, deferred, ...).
local function queued()
  local p = io.popen("find " .. sh(pf.dir .. "/queue") .. " -path '*/maildrop' -prune -o " ..
    "\\( -path '*/incoming/*' -o -path '*/active/*' -o -path '*/deferred/*' -o -path '*/hold/*' \\) " ..
    "-type f -print 2>/dev/null | wc -l")
  local n = tonumber(p:read("*a")) or 0
  p:close()
  return n
end

local function wait_drained()
  local deadline = core.now() + 30
  while core.now() < deadline do
    if queued() == 0 then return true end
    os.execute("sleep 0.05")
  end
  return false
end

local FROM, TO = "a@x.test", "b@y.test"
local clients = {
  { name = "lua-smtp", cmd = string.format("%s bench/lua_smtp_client.lua tls %d %d %d %s",
      LUA, N, SIZE, port, sh(C.ca)) },
  { name = "lua-smtp-no-resumption", cmd = string.format(
      "%s bench/lua_smtp_client.lua tls-noresume %d %d %d %s", LUA, N, SIZE, port, sh(C.ca)) },
  { name = "lua-smtp-nothing-kept", cmd = string.format(
      "%s bench/lua_smtp_client.lua tls-nocache %d %d %d %s", LUA, N, SIZE, port, sh(C.ca)) },
  { name = "smtplib", cmd = string.format("%s bench/smtplib_client.py tls %d %d %d %s",
      PY, N, SIZE, port, sh(C.ca)) },
  { name = "curl", need = "curl", cmd = string.format(
      "sh -c 'i=0; while [ $i -lt %d ]; do i=$((i+1)); curl -s -S --ssl-reqd --cacert %s " ..
      "smtp://127.0.0.1:%d --mail-from %s --mail-rcpt %s -T %s || exit 1; done'",
      N, C.ca, port, FROM, TO, msgfile) },
  { name = "swaks", need = "swaks", cmd = string.format(
      "sh -c 'i=0; while [ $i -lt %d ]; do i=$((i+1)); swaks --silent 2 --server 127.0.0.1 " ..
      "--port %d --tls --tls-verify --tls-ca-path %s --from %s --to %s --data @%s >/dev/null " ..
      "|| exit 1; done'", N, port, C.ca, FROM, TO, msgfile) },
}

local timefile = tmp .. "/time.out"
local ok, err = pcall(function()
  for rep = 1, REPS do
    for _, c in ipairs(clients) do
      if (not ONLY or ("," .. ONLY .. ","):find("," .. c.name .. ",", 1, true))
          and (not c.need or have(c.need)) then
        local s0 = server_cpu()
        local t0 = core.now()
        local rc = os.execute("/usr/bin/time -f '%U %S' -o " .. sh(timefile) .. " taskset -c " ..
          CLIENT_CPU .. " " .. c.cmd .. " > /dev/null 2> " .. sh(tmp .. "/client.err") .. " < /dev/null")
        local wall = core.now() - t0
        local drained = wait_drained()
        local s1 = server_cpu()
        local f = io.open(timefile)
        local u, s = (f and f:read("*a") or ""):match("([%d.]+) ([%d.]+)")
        if f then f:close() end
        -- every client exits non-zero unless the server took all N messages
        if rc ~= true or not drained then
          local e = io.open(tmp .. "/client.err")
          io.stderr:write(string.format("tls_bench: %s run %d: exit %s%s\n%s\n", c.name, rep,
            tostring(rc), drained and "" or ", queue not drained", e and e:read("*a"):sub(1, 400) or ""))
          if e then e:close() end
        end
        print(string.format("RESULT client=%s rep=%d ok=%d msgps=%.1f client_cpu_ms=%.2f " ..
          "server_cpu_ms=%.2f wall=%.3f", c.name, rep, (rc == true and drained) and N or 0, N / wall,
          ((tonumber(u) or 0) + (tonumber(s) or 0)) * 1000 / N, (s1 - s0) * 1000 / N, wall))
        io.stdout:flush()
      end
    end
  end
end)
cleanup()
if not ok then error(err) end
