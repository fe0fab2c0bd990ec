-- A private Postfix (+ Dovecot for SASL) for integration specs.
--
--   local postfix = require "spec.support.postfix"
--   if postfix.available() then
--     local pf = postfix.start{ users = { { "alice", "secret" }, { "bób", "pässwörd" } } }
--     -- pf.ports.plain       smtpd, STARTTLS offered, AUTH only after STARTTLS,
--     --                      relays for 127.0.0.0/8 without AUTH
--     -- pf.ports.submission  STARTTLS required, AUTH required before RCPT
--     -- pf.ports.smtps       implicit TLS (wrapper mode), AUTH offered
--     -- pf.certs             spec.support.certs paths (server cert: good.crt)
--     local msgs = pf:messages(1)    -- { { sender=, recipient=, data=, content=, file= } }
--     pf:stop()
--   end
--
-- Everything lives in a fresh temp dir pf.dir (/tmp/lua-smtp-pf.XXXXXX):
--   etc/        main.cf, master.cf            (postfix -c pf.dir/etc)
--   queue/      queue_directory, data/ data_directory
--   dovecot/    dovecot.conf, users (passwd-file, {PLAIN}), run/ (base_dir)
--   maildir/    one file per delivered message and recipient
--   certs/      certs.make() output (unless opts.certs_dir is given)
--   maillog     Postfix's log (maillog_file; there is no syslog), dovecot.log
--
-- postfix.start(opts), opts (all optional):
--   users      = { { name, password }, ... }  SASL users (no ':' or newlines);
--                Dovecot offers PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 (SCRAM-SHA-1
--                too), passwords stored as {PLAIN} so every mechanism works;
--                user names are case-sensitive and may be UTF-8.
--   mechanisms = "plain login ..."  Dovecot auth_mechanisms override
--   main       = { name = value }   extra / overriding main.cf settings, e.g.
--                { message_size_limit = 64 * 1024 * 1024 } for big messages
--                (smtpd wants 1.5 times that free in the queue file system)
--   hostname   = "mx.lua-smtp.test" myhostname (shown in the greeting)
--   certs_dir  = dir                 where to make/reuse the certificates
--   timeout    = 15                  start-up limit in seconds
--   capture_procs = 1                deliveries at once (more than 1: files
--                                    are no longer written in queue order)
--
-- Object:
--   pf.ports = { plain=, submission=, smtps= }, pf.dir, pf.certs, pf.maildir,
--   pf.config_dir (the -c directory), pf.users
--   pf.log() / pf:log()              the maillog text
--   pf.dovecot_log() / pf:dovecot_log()
--   pf:messages(n, timeout)          waits (default 10 s) until at least n
--       messages were delivered, returns all of them in delivery order as
--       { sender = "a@b" ("" for <>), recipient = "c@d", data = message as
--       delivered (LF line ends, Postfix's Received: header on top),
--       content = data without that first Received: header, file = path }.
--       A message for k recipients is delivered k times (one per recipient).
--       Raises an error with the maillog tail on timeout.  n = 0: no wait.
--   pf:clear()                       removes delivered messages
--   pf:by_subject(prefix, n, timeout) the delivered messages whose Subject
--                                    starts with prefix, by Subject, once n
--                                    are there
--   postfix.shared(opts)             need, stop: one instance for a block
--   pf:pids()                        live PIDs of this instance (masters and
--                                    all their descendants)
--   pf:restart_postfix(pause)        stops Postfix (queue kept), waits, starts it
--   pf:stop()                        stops Postfix and Dovecot, waits for
--       their processes, removes pf.dir; safe to call twice.
--   pf.pidns                         true when the servers run in PID namespaces
-- postfix.available() -> true when postfix, dovecot and openssl are
--   installed and we are root.
-- postfix.stop_all() stops every instance still running.
-- postfix.util: the helpers below (spawn, stop_service, server_argv, poll,
--   mkdtemp ...) for spec/support/dovecot_lmtp.lua.
--
-- Processes.  Postfix runs in the foreground ("postfix start-fg"), Dovecot
-- with -F, both started as "echo $$; exec ..." through io.popen like
-- spec/support/servers.lua, so this Lua process is their parent and reaps
-- them (PID 1 does not reap orphans here).  Where "unshare --pid" works
-- (it does as root here) each runs as the init of its own PID namespace:
-- "postfix start-fg" then runs "master -i" (Postfix's init mode), orphans
-- are reaped inside, and when the server's main process exits the kernel
-- ends and reaps whatever is left, so nothing becomes a zombie of PID 1.
-- Log lines then show namespace PIDs.  The pid files (queue/pid/master.pid,
-- dovecot/run/master.pid) are rewritten with the real PIDs, so
-- "postfix -c pf.config_dir stop|status|reload" still work.  Without
-- unshare (or with LUA_SMTP_NO_PIDNS=1) Postfix's children are ended while
-- the master still runs, before the master; Dovecot's log process may then
-- remain as a zombie.  With setpriv, the servers get SIGKILL when this Lua
-- process dies without stopping them.  pf:stop() also runs, at the latest,
-- when busted closes the Lua state (os.exit(code, true)).
--
-- Needs root (Postfix and Dovecot drop privileges to their own users) and
-- the Debian packages postfix, dovecot-core and openssl.
-- Works with Lua 5.1 .. 5.4 and LuaJIT.

local socket = require "socket"
local util = require "spec.support.util"
local certs = require "spec.support.certs"

local M = {}

local POLL = 0.05

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

local shell_quote, execute, write_file, capture, tail, alive =
  util.shell_quote, util.execute, util.write_file, util.capture, util.tail, util.alive
local function read_file(path) return util.read_file(path) or "" end
local function poll(timeout, cond) return util.poll(timeout, cond, POLL) end

local POSTFIX = util.find_program("postfix", { "/usr/sbin/postfix" })
local DOVECOT = util.find_program("dovecot", { "/usr/sbin/dovecot" })

local IS_ROOT = util.is_root()

function M.available()
  return POSTFIX ~= nil and DOVECOT ~= nil and IS_ROOT and certs.available()
end

-- parent PID of every process (from /proc)
local function process_table()
  local ppids = {}
  local list = capture("ls /proc 2>/dev/null")
  for pid in list:gmatch("%d+") do
    local stat = read_file("/proc/" .. pid .. "/stat")
    local state, ppid = stat:match("^%d+ %b() (%a) (%d+)")
    if ppid and state ~= "Z" and state ~= "X" then
      ppids[tonumber(pid)] = tonumber(ppid)
    end
  end
  return ppids
end

-- live descendants of the given PIDs (not the PIDs themselves)
local function descendants(roots)
  local ppids = process_table()
  local set, out = {}, {}
  for _, r in ipairs(roots) do set[r] = true end
  local changed = true
  while changed do
    changed = false
    for pid, ppid in pairs(ppids) do
      if set[ppid] and not set[pid] then
        set[pid] = true
        out[#out + 1] = pid
        changed = true
      end
    end
  end
  table.sort(out)
  return out
end

---------------------------------------------------------------------------
-- child processes (same pattern as spec/support/servers.lua)
---------------------------------------------------------------------------

-- { pid =, handle = } of argv started with util.spawn, stdout and stderr
-- to out_file
local function spawn(argv, out_file)
  local handle, pid = util.spawn(argv, { stdout = out_file })
  return { pid = pid, handle = handle }
end

local function reap(proc)
  if proc and proc.handle then
    local h = proc.handle
    proc.handle = nil
    h:close()
  end
end

local function gone(pids)
  for _, p in ipairs(pids) do
    if alive(p) then return nil end
  end
  return true
end

-- TERM, wait, KILL, wait
local function kill_wait(pids, timeout)
  if #pids == 0 then return true end
  execute("kill -TERM " .. table.concat(pids, " ") .. " 2>/dev/null")
  if poll(timeout or 3, function() return gone(pids) end) then return true end
  execute("kill -KILL " .. table.concat(pids, " ") .. " 2>/dev/null")
  return poll(3, function() return gone(pids) end) == true
end

---------------------------------------------------------------------------
-- configuration
---------------------------------------------------------------------------

local DELIVER = [[
#!/bin/sh
# pipe(8) delivery for the spec Postfix: $1 maildir, $2 sender, $3 recipient
dir=$1
name=$(date +%s%N).$$
umask 022
{ printf '%s\n%s\n' "$2" "$3" && cat; } > "$dir/.$name" || exit 75
mv "$dir/.$name" "$dir/$name" || exit 75
exit 0
]]

-- queue_directory subdirectories: name, owner[:group], mode (postfix-files)
local QUEUE_DIRS = {
  { "active", "postfix", "700" }, { "bounce", "postfix", "700" },
  { "corrupt", "postfix", "700" }, { "defer", "postfix", "700" },
  { "deferred", "postfix", "700" }, { "flush", "postfix", "700" },
  { "hold", "postfix", "700" }, { "incoming", "postfix", "700" },
  { "saved", "postfix", "700" }, { "trace", "postfix", "700" },
  { "private", "postfix", "700" }, { "maildrop", "postfix:postdrop", "730" },
  { "public", "postfix:postdrop", "710" }, { "pid", "root", "755" },
}

local function main_cf(pf, opts)
  local d = pf.dir
  local s = {
    { "compatibility_level", "3.6" },
    { "queue_directory", d .. "/queue" },
    { "data_directory", d .. "/data" },
    { "mail_owner", "postfix" },
    { "setgid_group", "postdrop" },
    { "myhostname", opts.hostname or "mx.lua-smtp.test" },
    { "mydomain", "lua-smtp.test" },
    { "myorigin", "$myhostname" },
    { "mydestination", "" },
    { "relay_domains", "" },
    { "local_recipient_maps", "" },
    { "relay_recipient_maps", "" },
    { "alias_maps", "" },
    { "alias_database", "" },
    { "inet_interfaces", "127.0.0.1" },
    { "inet_protocols", "ipv4" },
    { "mynetworks", "127.0.0.0/8" },
    { "maillog_file", d .. "/maillog" },
    { "maillog_file_prefixes", d },
    { "biff", "no" },
    { "append_dot_mydomain", "no" },
    { "local_header_rewrite_clients", "" },
    { "smtpd_peername_lookup", "no" },
    { "smtpd_error_sleep_time", "0" },
    { "smtpd_soft_error_limit", "100" },
    { "smtpd_hard_error_limit", "1000" },
    { "smtpd_junk_command_limit", "1000" },
    { "in_flow_delay", "0" },
    { "default_transport", "capture" },
    { "relay_transport", "capture" },
    { "local_transport", "capture" },
    { "virtual_transport", "capture" },
    { "capture_destination_recipient_limit", "1" },
    { "smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, reject" },
    { "smtpd_recipient_restrictions", "" },
    { "smtpd_tls_security_level", "may" },
    { "smtpd_tls_cert_file", pf.certs.good },
    { "smtpd_tls_key_file", pf.certs.good_key },
    { "smtpd_tls_CAfile", pf.certs.ca },
    { "smtpd_tls_loglevel", "1" },
    { "smtpd_tls_auth_only", "yes" },
    { "smtpd_sasl_auth_enable", "yes" },
    { "smtpd_sasl_type", "dovecot" },
    { "smtpd_sasl_path", pf.auth_socket },
    { "smtpd_sasl_security_options", "noanonymous" },
    { "smtpd_sasl_tls_security_options", "noanonymous" },
    { "broken_sasl_auth_clients", "no" },
  }
  local index = {}
  for i, kv in ipairs(s) do index[kv[1]] = i end
  local extra = {}
  for k in pairs(opts.main or {}) do extra[#extra + 1] = k end
  table.sort(extra)
  for _, k in ipairs(extra) do
    local v = tostring(opts.main[k])
    if index[k] then s[index[k]][2] = v else s[#s + 1] = { k, v } end
  end
  local out = { "# generated by spec/support/postfix.lua\n" }
  for _, kv in ipairs(s) do out[#out + 1] = kv[1] .. " = " .. kv[2] .. "\n" end
  return table.concat(out)
end

local function master_cf(pf)
  local p = pf.ports
  local d = pf.dir
  return table.concat({
    "# generated by spec/support/postfix.lua; chroot is off everywhere",
    "127.0.0.1:" .. p.plain .. " inet n - n - - smtpd",
    "127.0.0.1:" .. p.submission .. " inet n - n - - smtpd",
    "  -o syslog_name=postfix/submission",
    "  -o smtpd_tls_security_level=encrypt",
    "  -o smtpd_sasl_auth_enable=yes",
    "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject",
    "127.0.0.1:" .. p.smtps .. " inet n - n - - smtpd",
    "  -o syslog_name=postfix/smtps",
    "  -o smtpd_tls_wrappermode=yes",
    "  -o smtpd_sasl_auth_enable=yes",
    "pickup unix n - n 60 1 pickup",
    "cleanup unix n - n - 0 cleanup",
    "qmgr unix n - n 300 1 qmgr",
    "tlsmgr unix - - n 1000? 1 tlsmgr",
    "rewrite unix - - n - - trivial-rewrite",
    "bounce unix - - n - 0 bounce",
    "defer unix - - n - 0 bounce",
    "trace unix - - n - 0 bounce",
    "verify unix - - n - 1 verify",
    "flush unix n - n 1000? 0 flush",
    "proxymap unix - - n - - proxymap",
    "proxywrite unix - - n - 1 proxymap",
    "smtp unix - - n - - smtp",
    "relay unix - - n - - smtp",
    "showq unix n - n - - showq",
    "error unix - - n - - error",
    "retry unix - - n - - error",
    "discard unix - - n - - discard",
    "local unix - n n - - local",
    "virtual unix - n n - - virtual",
    "lmtp unix - - n - - lmtp",
    "anvil unix - - n - 1 anvil",
    "scache unix - - n - 1 scache",
    "postlog unix-dgram n - n - 1 postlogd",
    -- one delivery at a time, so files are written in queue order
    "capture unix - n n - " .. (pf.capture_procs or 1) .. " pipe",
    "  user=nobody:nogroup null_sender=",
    "  argv=/bin/sh " .. d .. "/deliver.sh " .. d .. "/maildir ${sender} ${recipient}",
    "",
  }, "\n")
end

local function dovecot_conf(pf, opts)
  local d = pf.dir .. "/dovecot"
  return table.concat({
    "# generated by spec/support/postfix.lua: Dovecot as SASL server only",
    "protocols = none",
    "base_dir = " .. d .. "/run",
    "state_dir = " .. d .. "/state",
    "instance_name = " .. pf.instance,
    "log_path = " .. pf.dir .. "/dovecot.log",
    "ssl = no",
    "disable_plaintext_auth = no",
    "auth_mechanisms = " .. (opts.mechanisms or "plain login cram-md5 scram-sha-1 scram-sha-256"),
    "auth_username_chars =",
    "auth_username_format = %u",
    "auth_failure_delay = 0",
    "auth_verbose = yes",
    "auth_debug = " .. (opts.debug and "yes" or "no"),
    "passdb {",
    "  driver = passwd-file",
    "  args = scheme=PLAIN username_format=%u " .. d .. "/users",
    "}",
    "userdb {",
    "  driver = static",
    "  args = uid=nobody gid=nogroup home=/nonexistent",
    "}",
    "service auth {",
    "  unix_listener auth-postfix {",
    "    mode = 0666",
    "  }",
    "}",
    -- without the anvil penalty socket Dovecot skips its growing delay
    -- after failed logins (up to 15 s per attempt from the same IP)
    "service anvil {",
    "  unix_listener anvil-auth-penalty {",
    "    mode = 0",
    "  }",
    "}",
    "",
  }, "\n")
end

local function users_file(users)
  local out = {}
  for i, u in ipairs(users or {}) do
    local name, pass = u[1] or u.name, u[2] or u.password
    assert(type(name) == "string" and type(pass) == "string", "users[" .. i .. "]: { name, password } expected")
    assert(not (name .. pass):find("[:\r\n]"), "users[" .. i .. "]: ':' and newlines are not supported")
    out[#out + 1] = name .. ":{PLAIN}" .. pass .. "::::::\n"
  end
  return table.concat(out)
end

---------------------------------------------------------------------------
-- instance
---------------------------------------------------------------------------

local PF = {}
PF.__index = PF

local live = {}

function PF:log()
  return read_file(self.dir .. "/maillog")
end

function PF:dovecot_log()
  return read_file(self.dir .. "/dovecot.log")
end

function PF:_fail(what)
  local msg = "postfix.start: " .. what
    .. "\n--- maillog (tail) ---\n" .. tail(self:log())
    .. "\n--- postfix output ---\n" .. tail(read_file(self.dir .. "/postfix.out"))
    .. "\n--- dovecot.log (tail) ---\n" .. tail(self:dovecot_log())
    .. "\n--- dovecot output ---\n" .. tail(read_file(self.dir .. "/dovecot.out"))
  self:stop()
  error(msg, 3)
end

-- The process that is the service itself: the child of unshare (PID
-- namespace) or of postfix-script, or the spawned process.
local function service_pid(proc, nested)
  if not nested then return proc.pid end
  for p, ppid in pairs(process_table()) do
    if ppid == proc.pid then return p end
  end
  return nil
end

function PF:pids()
  local roots = {}
  for _, proc in ipairs({ self.postfix_proc, self.dovecot_proc }) do
    if proc and proc.handle and alive(proc.pid) then roots[#roots + 1] = proc.pid end
  end
  local out = {}
  for _, r in ipairs(roots) do out[#out + 1] = r end
  for _, p in ipairs(descendants(roots)) do out[#out + 1] = p end
  table.sort(out)
  return out
end

-- TERM the service, wait (bounded) for the spawned process, KILL the rest
local function stop_service(proc, nested, prepare)
  if not proc or not proc.handle then return end
  if alive(proc.pid) then
    local main = service_pid(proc, nested)
    if main then
      if prepare then prepare(main) end
      execute("kill -TERM " .. main .. " 2>/dev/null")
    end
    if not poll(5, function() return (not alive(proc.pid)) or nil end) then
      -- KILLing a namespace's init takes the whole namespace down
      local all = descendants({ proc.pid })
      all[#all + 1] = proc.pid
      execute("kill -KILL " .. table.concat(all, " ") .. " 2>/dev/null")
      poll(3, function() return (not alive(proc.pid)) or nil end)
    end
  end
  reap(proc)
end

-- Without a PID namespace the children of the master would outlive it and,
-- orphaned, never be reaped: end them first, while the master reaps them.
-- It may respawn one (postlogd, to log those deaths): repeat a few times.
local function end_master_children(master)
  local deadline = socket.gettime() + 4
  local quiet_since
  while socket.gettime() < deadline do
    local kids = descendants({ master })
    if #kids > 0 then
      quiet_since = nil
      kill_wait(kids, 2)
    else
      quiet_since = quiet_since or socket.gettime()
      if socket.gettime() - quiet_since >= 0.3 then return end
      socket.sleep(0.05)
    end
  end
end

function PF:_stop_postfix()
  -- "postfix stop" sends TERM to the master too, then sleeps 1 s before
  -- it looks again; we wait for our own child instead
  stop_service(self.postfix_proc, true, (not self.pidns) and end_master_children or nil)
  self.postfix_proc = nil
end

function PF:_stop_dovecot()
  stop_service(self.dovecot_proc, self.pidns)
  self.dovecot_proc = nil
end

function PF:stop()
  if self.stopped then return true end
  self:_stop_postfix()
  self:_stop_dovecot()
  if self.dir and self.dir:match("^/tmp/lua%-smtp%-pf%.") then
    execute("rm -rf " .. shell_quote(self.dir))
  end
  self.stopped = true
  live[self] = nil
  return true
end

function PF:_list()
  local names = {}
  local out = capture("ls -1 " .. shell_quote(self.maildir) .. " 2>/dev/null")
  for name in out:gmatch("[^\n]+") do
    if name:sub(1, 1) ~= "." then names[#names + 1] = name end
  end
  table.sort(names, function(a, b)
    local ta, tb = tonumber(a:match("^%d+")) or 0, tonumber(b:match("^%d+")) or 0
    if ta ~= tb then return ta < tb end
    return a < b
  end)
  return names
end

local function parse_message(text, file)
  local sender, rest = text:match("^([^\n]*)\n(.*)$")
  local recipient, data = (rest or ""):match("^([^\n]*)\n(.*)$")
  data = data or ""
  -- Postfix's own Received: header is the first header, possibly folded
  local content = data
  local first = data:match("^Received:[^\n]*\n")
  if first then
    local i = #first + 1
    while true do
      local cont = data:match("^[ \t][^\n]*\n", i)
      if not cont then break end
      i = i + #cont
    end
    content = data:sub(i)
  end
  return { sender = sender or "", recipient = recipient or "", data = data, content = content, file = file }
end

function PF:messages(n, timeout)
  n = n or 0
  local names = poll(timeout or 10, function()
    local l = self:_list()
    if #l >= n then return l end
    return nil
  end)
  if not names then
    error(string.format("postfix: expected %d message(s), got %d\n--- maillog (tail) ---\n%s",
      n, #self:_list(), tail(self:log())), 2)
  end
  local list = {}
  for i, name in ipairs(names) do
    local path = self.maildir .. "/" .. name
    list[i] = parse_message(read_file(path), path)
  end
  return list
end

function PF:clear()
  for _, name in ipairs(self:_list()) do os.remove(self.maildir .. "/" .. name) end
end

-- Can we run each server in its own PID namespace?  Then the server is
-- the namespace's init and reaps its orphans, and when it exits the kernel
-- ends and reaps whatever is left: no zombies even though PID 1 here does
-- not reap.  (Postfix's "start-fg" then runs "master -i", its init mode.)
-- LUA_SMTP_NO_PIDNS=1 turns this off.
local pidns_ok
local function use_pidns()
  if pidns_ok == nil then
    pidns_ok = os.getenv("LUA_SMTP_NO_PIDNS") == nil
      and execute("unshare --pid --fork --kill-child true >/dev/null 2>&1")
  end
  return pidns_ok
end

-- setpriv --pdeathsig: the spawned process gets SIGKILL when this Lua
-- process dies (killed by a timeout, say); with --kill-child, unshare then
-- takes its namespace down, so no server outlives the specs.
local pdeathsig_ok
local function use_pdeathsig()
  if pdeathsig_ok == nil then
    pdeathsig_ok = execute("setpriv --pdeathsig KILL true >/dev/null 2>&1")
  end
  return pdeathsig_ok
end

-- An object whose finalizer stops pf.  busted ends with os.exit(code, true),
-- which closes the Lua state and runs finalizers, newest first: made after
-- the popen handles, it runs before them, so their close (which waits for
-- the process) does not hang on a still running server.
local function make_guard(fn)
  local newproxy = rawget(_G, "newproxy")   -- Lua 5.1 / LuaJIT
  if newproxy then
    local u = newproxy(true)
    getmetatable(u).__gc = fn
    return u
  end
  return setmetatable({}, { __gc = fn })
end

-- rewrites a pid file in place (same inode: the master's lock stays)
-- (Postfix pads the PID to a fixed width: keep the length)
local function fix_pid_file(path, pid)
  if not pid then return end
  local old = poll(2, function()
    local s = read_file(path)
    return s:match("%d") and s or nil
  end)
  if not old then return end
  local width = math.max(#old - 1, 0)
  local f = io.open(path, "r+b")
  if not f then return end
  f:write(string.format("%" .. width .. "d\n", pid))
  f:close()
end

-- a fresh directory /tmp/<prefix>.XXXXXX (prefix: "lua-smtp-pf" by default)
local function mkdtemp(prefix) return util.mkdtemp(prefix or "lua-smtp-pf") end

-- The argv that runs a server under setpriv --pdeathsig KILL (when it
-- works) and, with pidns, as the init of its own PID namespace.
local function server_argv(pidns, words)
  local t = {}
  if use_pdeathsig() then t = { "setpriv", "--pdeathsig", "KILL" } end
  if pidns then
    for _, w in ipairs({ "unshare", "--pid", "--fork", "--kill-child" }) do t[#t + 1] = w end
  end
  for _, w in ipairs(words) do t[#t + 1] = w end
  return t
end

-- Starts Postfix's master (the configuration is written already): true
-- once it greets on the plain port within timeout seconds.
function PF:_start_postfix(timeout)
  local dir = self.dir
  -- postfix-script removes quick-start at each start; without it a restart
  -- runs the full integrity check, which can fail in this private layout
  execute("touch " .. shell_quote(dir .. "/queue/quick-start"))
  self.postfix_proc = spawn(server_argv(self.pidns, { POSTFIX, "-c", self.config_dir, "start-fg" }),
    dir .. "/postfix.out")
  local up = poll(timeout, function()
    if not alive(self.postfix_proc.pid) then return false end
    -- the master binds every listener before it serves any: one greeting
    -- on the plain port shows all three are there
    if util.greets(self.ports.plain) then return true end
    return nil
  end)
  if up and self.pidns then
    -- it wrote its namespace PID (1) into its pid file; "postfix stop"
    -- would then signal this machine's PID 1
    fix_pid_file(dir .. "/queue/pid/master.pid", service_pid(self.postfix_proc, true))
  end
  return up
end

-- Stops Postfix as a server stop does (every process ends; the queue stays
-- on disk), waits pause seconds, starts it again: true once it greets.
-- Dovecot keeps running. For fault runs (load/).
function PF:restart_postfix(pause, timeout)
  self:_stop_postfix()
  if pause and pause > 0 then socket.sleep(pause) end
  return self:_start_postfix(timeout or 15)
end

local function start_once(opts)
  local dir = mkdtemp()
  local pf = setmetatable({
    dir = dir,
    config_dir = dir .. "/etc",
    maildir = dir .. "/maildir",
    instance = "lua-smtp-" .. dir:match("([^.]+)$"),
    auth_socket = dir .. "/dovecot/run/auth-postfix",
    users = opts.users or {},
    capture_procs = opts.capture_procs,
    ports = {},
  }, PF)
  pf.log = function() return PF.log(pf) end
  pf.dovecot_log = function() return PF.dovecot_log(pf) end
  live[pf] = true

  local used = {}
  for _, name in ipairs({ "plain", "submission", "smtps" }) do
    local p
    repeat p = util.free_port() until not used[p]
    used[p] = true
    pf.ports[name] = p
  end

  local ok, err = pcall(function()
    assert(execute("chmod 755 " .. shell_quote(dir)
      .. " && mkdir -p " .. shell_quote(pf.config_dir) .. " " .. shell_quote(dir .. "/queue")
      .. " " .. shell_quote(dir .. "/dovecot/run") .. " " .. shell_quote(dir .. "/dovecot/state")
      .. " " .. shell_quote(pf.maildir)
      .. " && chown nobody:nogroup " .. shell_quote(pf.maildir)
      .. " && chmod 755 " .. shell_quote(pf.config_dir) .. " " .. shell_quote(dir .. "/queue")
      .. " " .. shell_quote(dir .. "/dovecot")), "cannot prepare " .. dir)
    pf.certs = certs.make(opts.certs_dir or (dir .. "/certs"))
    -- the queue layout "post-install create-missing" would make; with
    -- queue/quick-start present, "postfix start-fg" skips its slow checks
    -- (some 60 short-lived processes, about 3 s here)
    local q = dir .. "/queue/"
    local cmds = { "mkdir -p " .. shell_quote(dir .. "/data") .. " && chown postfix "
      .. shell_quote(dir .. "/data") .. " && chmod 700 " .. shell_quote(dir .. "/data") }
    for _, sub in ipairs(QUEUE_DIRS) do
      local name, owner, mode = sub[1], sub[2], sub[3]
      cmds[#cmds + 1] = "mkdir -p " .. shell_quote(q .. name) .. " && chown " .. owner
        .. " " .. shell_quote(q .. name) .. " && chmod " .. mode .. " " .. shell_quote(q .. name)
    end
    cmds[#cmds + 1] = "touch " .. shell_quote(q .. "quick-start")
    assert(execute(table.concat(cmds, " && ")), "cannot create the queue directories")
    write_file(dir .. "/deliver.sh", DELIVER)
    execute("chmod 755 " .. shell_quote(dir .. "/deliver.sh"))
    write_file(pf.config_dir .. "/main.cf", main_cf(pf, opts))
    write_file(pf.config_dir .. "/master.cf", master_cf(pf))
    -- Postfix re-reads a "hot" main.cf (modified less than a second ago)
    -- every 300 ms until it is not: date the files back
    assert(execute("touch -d '2000-01-01 00:00:00' " .. shell_quote(pf.config_dir .. "/main.cf")
      .. " " .. shell_quote(pf.config_dir .. "/master.cf")), "cannot touch main.cf")
    write_file(dir .. "/dovecot/dovecot.conf", dovecot_conf(pf, opts))
    write_file(dir .. "/dovecot/users", users_file(opts.users))
    execute("chmod 644 " .. shell_quote(dir .. "/dovecot/users"))
  end)
  if not ok then
    pf:stop()
    error(err, 0)
  end

  local deadline = socket.gettime() + (opts.timeout or 15)
  local function left() return math.max(0.1, deadline - socket.gettime()) end

  -- Dovecot first: smtpd asks it for the mechanisms
  pf.pidns = use_pidns()
  local function argv(...) return server_argv(pf.pidns, { ... }) end
  pf.dovecot_proc = spawn(argv(DOVECOT, "-F", "-c", dir .. "/dovecot/dovecot.conf"), dir .. "/dovecot.out")
  local up = poll(left(), function()
    if execute("test -S " .. shell_quote(pf.auth_socket)) then return true end
    if not alive(pf.dovecot_proc.pid) then return false end
    return nil
  end)
  if not up then pf:_fail("dovecot did not start") end

  up = pf:_start_postfix(left())
  if up and pf.pidns then
    fix_pid_file(dir .. "/dovecot/run/master.pid", service_pid(pf.dovecot_proc, true))
  end
  if up then
    live[pf] = make_guard(function() pf:stop() end)
  end
  if not up then
    local busy = pf:log():find("Address already in use", 1, true) ~= nil
    local ok2, e = pcall(pf._fail, pf, "postfix did not start")
    assert(not ok2)
    return nil, e, busy
  end
  return pf
end

function M.start(opts)
  assert(M.available(), "postfix.start: needs root and postfix, dovecot-core, openssl")
  local pf = util.start_retrying(start_once, opts or {})
  return pf
end

function M.stop_all()
  util.stop_all(live)
end

-- One instance shared by the tests of a block, started at the first need:
--   local need, stop = postfix.shared{ users = ... }
--   it(..., function() local pf = need(pending) if not pf then return end ... end)
--   teardown(stop)
-- need(pending) -> the instance with its deliveries cleared, or nil after
-- pending(why) when Postfix cannot run here.
function M.shared(opts)
  local pf
  local function need(pending)
    if not M.available() then
      pending("postfix / dovecot-core are not installed (or not root)")
      return nil
    end
    pf = pf or M.start(opts)
    pf:clear()
    return pf
  end
  local function stop()
    if pf then pf:stop() end
    pf = nil
    M.stop_all()
  end
  return need, stop
end

-- The delivered messages whose Subject starts with prefix, by Subject,
-- once n of them are there (at most timeout seconds, default 20): a failed
-- earlier test's late deliveries do not count, as they would with
-- pf:messages(n).
function PF:by_subject(prefix, n, timeout)
  local got, count
  local deadline = socket.gettime() + (timeout or 20)
  repeat
    got, count = {}, 0
    for _, m in ipairs(self:messages(0)) do
      local subject = ("\n" .. m.content):match("\nSubject: ([^\n]*)\n")
      if subject and subject:sub(1, #prefix) == prefix then
        got[subject], count = m, count + 1
      end
    end
    if count >= n then break end
    socket.sleep(POLL)
  until socket.gettime() > deadline
  return got
end

-- The process and file helpers above, for other private servers that are
-- started, watched and stopped the same way (spec/support/dovecot_lmtp.lua).
M.util = {
  shell_quote = shell_quote, execute = execute, read_file = read_file, write_file = write_file,
  capture = capture, poll = poll, tail = tail, alive = alive, mkdtemp = mkdtemp,
  spawn = spawn, reap = reap, descendants = descendants, service_pid = service_pid,
  stop_service = stop_service, use_pidns = use_pidns, server_argv = server_argv,
  make_guard = make_guard, fix_pid_file = fix_pid_file,
  dovecot = DOVECOT, is_root = IS_ROOT,
}


return M
