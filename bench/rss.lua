-- Peak RSS of a client sending a large attachment to a real Postfix.
-- Started by bench/rss.sh (see there); needs root, postfix and dovecot
-- (spec/support/postfix.lua's private instance), /usr/bin/time, base64 and
-- sha256sum.
--
--   lua5.4 bench/rss.lua WORKDIR [size_mb [path ...]]
--
-- Makes a file of size_mb MB of random bytes in WORKDIR (once), starts the
-- private Postfix with message_size_limit raised, and for each path (data,
-- chunking, chunking-alone; all three by default) runs
--   /usr/bin/time -v lua5.4 bench/rss_client.lua PORT FILE PATH
-- reads "Maximum resident set size" from it, waits for the delivery file
-- and checks it: its size, and the attachment decoded from it (base64 -d)
-- against the original (sha256).  Prints one line per path, then
--   RESULT path=<p> rss_mb=<peak> under=<yes|no> sent=<0|1> delivered_bytes=<n> attachment=<ok|BAD|missing>
-- Exit status 0 when every path sent and delivered the message intact
-- (whether the RSS target was met or not), 1 otherwise.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = "./build/lua5.4/?.so;" .. package.cpath

local postfix = require "spec.support.postfix"
local util = require "spec.support.util"
local socket = require "socket"

local TARGET_MB = 16
local LUA = os.getenv("LUA") or "lua5.4"
local NAMES = {
  data = "DATA (chunking = false)",
  chunking = "CHUNKING + PIPELINING (default)",
  ["chunking-alone"] = "CHUNKING alone (pipelining = false)",
}

local work = arg[1]
local size_mb = tonumber(arg[2]) or 100
local paths = {}
for i = 3, #arg do paths[#paths + 1] = arg[i] end
if #paths == 0 then paths = { "data", "chunking", "chunking-alone" } end
for _, p in ipairs(paths) do
  if not NAMES[p] then error("unknown path " .. p .. " (data, chunking, chunking-alone)") end
end
if not work then
  io.stderr:write("usage: lua5.4 bench/rss.lua WORKDIR [size_mb [path ...]]\n")
  os.exit(2)
end

if not postfix.available() then
  print("SKIP postfix or dovecot missing, or not root")
  os.exit(0)
end

local q, sh = util.shell_quote, util.capture
local function read(path) return util.read_file(path) or "" end

-- the attachment, once
local file = work .. "/attachment.bin"
local made = util.execute("dd if=/dev/urandom of=" .. q(file) .. " bs=1M count=" .. size_mb .. " status=none")
assert(made, "dd failed")
local want_sha = sh("sha256sum < " .. q(file)):match("^(%x+)")

-- base64 is 4/3 of it, plus CRLF every 76 characters, plus headers
local limit = math.floor(size_mb * 1024 * 1024 * 1.5) + 16 * 1024 * 1024
local pf = postfix.start{ main = { message_size_limit = limit, mailbox_size_limit = 0 } }

-- The one delivered file, once it is there (Postfix writes it as .name,
-- then renames it): its path, or nil after `timeout` seconds.
local function delivered(timeout)
  local stop = socket.gettime() + timeout
  repeat
    local names = sh("ls -1 " .. q(pf.maildir) .. " 2>/dev/null")
    for name in names:gmatch("[^\n]+") do
      if name:sub(1, 1) ~= "." then return pf.maildir .. "/" .. name end
    end
    socket.sleep(0.1)
  until socket.gettime() > stop
  return nil
end

-- sha256 of the attachment decoded from the delivered file: the base64
-- lines after the attachment's part headers, up to the next boundary.
local EXTRACT = [[awk 'BEGIN { s = 0 }
  s == 0 && /^Content-Disposition: attachment/ { s = 1; next }
  s == 1 && /^$/ { s = 2; next }
  s == 2 && /^--/ { exit }
  s == 2 { print }' ]]

local failed = 0
local results = {}
for _, path in ipairs(paths) do
  pf:clear()
  local tfile = work .. "/time." .. path
  local ofile = work .. "/client." .. path
  sh("timeout -k 5 300 /usr/bin/time -v -o " .. q(tfile) .. " " .. q(LUA) .. " bench/rss_client.lua "
    .. pf.ports.plain .. " " .. q(file) .. " " .. path .. " > " .. q(ofile) .. " 2>&1")
  local tv = read(tfile)
  local out = read(ofile)
  local rss_kb = tonumber(tv:match("Maximum resident set size %(kbytes%): (%d+)"))
  local wall = tv:match("Elapsed %(wall clock%) time %b(): ([%d:.]+)") or "?"
  local sent = out:match("RESULT ok=1") ~= nil
  local got = sent and delivered(180) or nil
  local bytes, attachment = 0, "missing"
  if got then
    bytes = tonumber((sh("stat -c %s " .. q(got)):match("%d+"))) or 0
    local sha = sh(EXTRACT .. q(got) .. " | base64 -d 2>/dev/null | sha256sum"):match("^(%x+)")
    attachment = (sha == want_sha) and "ok" or "BAD"
  end
  local rss_mb = rss_kb and rss_kb / 1024 or nil
  local under = rss_mb and rss_mb < TARGET_MB
  if not (sent and attachment == "ok") then failed = failed + 1 end
  local line = string.format("%-36s peak RSS %7s MB  < %d MB: %-3s  wall %s  %s",
    NAMES[path], rss_mb and string.format("%.1f", rss_mb) or "?", TARGET_MB, under and "yes" or "NO", wall,
    sent and string.format("delivered: %d bytes, attachment %s", bytes, attachment)
      or ("NOT SENT: " .. (out:match("RESULT ok=0 ([^\n]*)") or out:sub(-300))))
  print(line)
  results[#results + 1] = string.format("RESULT path=%s rss_mb=%s under=%s sent=%d delivered_bytes=%d attachment=%s",
    path, rss_mb and string.format("%.1f", rss_mb) or "nan", under and "yes" or "no", sent and 1 or 0, bytes,
    attachment)
  io.stdout:flush()
end
for _, r in ipairs(results) do print(r) end

pf:stop()
os.exit(failed == 0 and 0 or 1)
