-- Throw-away test PKI for the TLS specs, made with the openssl command line.
--
--   local certs = require "spec.support.certs"
--   local c = certs.make("/tmp/some/dir")   -- cached: reuses a complete dir
--   c.ca, c.good, c.good_key, ...            -- absolute paths
--
-- Files made in dir (all world-readable, so Postfix/Dovecot may read them
-- after dropping privileges):
--   ca.crt / ca.key                  test CA ("lua-smtp Test CA")
--   good.crt / good.key              DNS:localhost, IP:127.0.0.1, signed by the CA
--   expired.crt / expired.key        like good, but valid 2020-01-01 .. 2020-01-02 only
--   wronghost.crt / wronghost.key    DNS:wrong.example, signed by the CA
--   selfsigned.crt / selfsigned.key  DNS:localhost, IP:127.0.0.1, self-signed leaf
--   other-ca.crt / other-ca.key      a second, unrelated CA
--   client.crt / client.key          client certificate (clientAuth), signed by the CA
--
-- certs.make(dir) returns a table with the absolute paths:
--   dir, ca, ca_key, good, good_key, expired, expired_key, wronghost,
--   wronghost_key, selfsigned, selfsigned_key, other_ca, other_ca_key,
--   client, client_key
-- and raises an error with openssl's output when something fails.
-- certs.available() tells whether the openssl binary is there;
-- certs.in_temp_dir(prefix) makes a set in a fresh temporary directory;
-- certs.missing(luasec) says why TLS specs cannot run (nil: they can).
--
-- Works with Lua 5.1 .. 5.4.

local util = require "spec.support.util"

local M = {}

local shell_quote, execute, write_file, file_exists =
  util.shell_quote, util.execute, util.write_file, util.file_exists
local read_file = util.read_file

local function absolute(dir)
  if dir:sub(1, 1) == "/" then return dir end
  local cwd = util.capture("pwd"):gsub("%s+$", "")
  if cwd == "" then cwd = "." end
  dir = dir:gsub("^%./", "")
  return cwd .. "/" .. dir
end

function M.available()
  return execute("command -v openssl >/dev/null 2>&1")
end

local NAMES = {
  ca = "ca.crt", ca_key = "ca.key",
  good = "good.crt", good_key = "good.key",
  expired = "expired.crt", expired_key = "expired.key",
  wronghost = "wronghost.crt", wronghost_key = "wronghost.key",
  selfsigned = "selfsigned.crt", selfsigned_key = "selfsigned.key",
  other_ca = "other-ca.crt", other_ca_key = "other-ca.key",
  client = "client.crt", client_key = "client.key",
}

local MARKER = ".complete"   -- written last: the dir holds a full set

local CONFIG = [[
# openssl configuration for spec/support/certs.lua
[ req ]
distinguished_name = req_dn
prompt             = no
default_md         = sha256

[ req_dn ]
CN = placeholder

[ v3_ca ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash

[ server_localhost ]
basicConstraints       = CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid

[ server_wrong ]
basicConstraints       = CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:wrong.example
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid

[ self_leaf ]
basicConstraints       = CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier   = hash

[ client_cert ]
basicConstraints       = CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid

# used only by "openssl ca" for the expired certificate
[ ca ]
default_ca = test_ca

[ test_ca ]
dir              = @DIR@/.ca
database         = $dir/index.txt
new_certs_dir    = $dir
serial           = $dir/serial
certificate      = @DIR@/ca.crt
private_key      = @DIR@/ca.key
default_md       = sha256
policy           = policy_any
unique_subject   = no
copy_extensions  = none
email_in_dn      = no

[ policy_any ]
commonName = supplied
]]

local function random_serial()
  -- 16 hex digits, first one non-zero
  local t = { string.format("%x", math.random(1, 15)) }
  for i = 2, 16 do t[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(t)
end

local function paths(dir)
  local r = { dir = dir }
  for k, name in pairs(NAMES) do r[k] = dir .. "/" .. name end
  return r
end

local seeded = false

function M.make(dir)
  assert(type(dir) == "string" and dir ~= "", "certs.make(dir): dir expected")
  dir = absolute(dir):gsub("/+$", "")
  local result = paths(dir)
  if file_exists(dir .. "/" .. MARKER) then
    local complete = true
    for _, p in pairs(result) do
      if p ~= dir and not file_exists(p) then complete = false break end
    end
    if complete then return result end
  end

  if not seeded then
    math.randomseed(os.time() + math.floor((os.clock() * 1e6) % 1e6))
    seeded = true
  end

  assert(execute("mkdir -p " .. shell_quote(dir .. "/.ca") .. " && chmod 755 "
    .. shell_quote(dir)), "cannot create " .. dir)
  os.remove(dir .. "/" .. MARKER)

  local q = function(name) return shell_quote(dir .. "/" .. name) end
  local cnf = dir .. "/.ca/openssl.cnf"
  write_file(cnf, (CONFIG:gsub("@DIR@", function() return dir end)))
  write_file(dir .. "/.ca/index.txt", "")
  write_file(dir .. "/.ca/serial", random_serial() .. "\n")
  local log = dir .. "/.ca/openssl.log"
  write_file(log, "")

  local function run(cmd)
    local full = "OPENSSL_CONF=" .. shell_quote(cnf) .. " " .. cmd
      .. " </dev/null >>" .. shell_quote(log) .. " 2>&1"
    if not execute(full) then
      error("certs.make: command failed: " .. cmd .. "\n" .. (read_file(log) or ""), 2)
    end
  end

  local C = " -config " .. shell_quote(cnf)
  local NEWKEY = " -newkey rsa:2048 -nodes"

  local function ca(crt, key, cn)
    run("openssl req -x509" .. C .. NEWKEY .. " -extensions v3_ca -days 3650 -subj "
      .. shell_quote("/CN=" .. cn) .. " -keyout " .. q(key) .. " -out " .. q(crt))
  end

  local function csr(name, cn)
    run("openssl req -new" .. C .. NEWKEY .. " -subj " .. shell_quote("/CN=" .. cn)
      .. " -keyout " .. q(name .. ".key") .. " -out " .. q(".ca/" .. name .. ".csr"))
  end

  local function sign(name, ext)
    run("openssl x509 -req -in " .. q(".ca/" .. name .. ".csr")
      .. " -CA " .. q("ca.crt") .. " -CAkey " .. q("ca.key")
      .. " -set_serial 0x" .. random_serial() .. " -days 3650"
      .. " -extfile " .. shell_quote(cnf) .. " -extensions " .. ext
      .. " -out " .. q(name .. ".crt"))
  end

  ca("ca.crt", "ca.key", "lua-smtp Test CA")
  ca("other-ca.crt", "other-ca.key", "lua-smtp Other Test CA")

  csr("good", "localhost");       sign("good", "server_localhost")
  csr("wronghost", "wrong.example"); sign("wronghost", "server_wrong")
  csr("client", "lua-smtp test client"); sign("client", "client_cert")

  run("openssl req -x509" .. C .. NEWKEY .. " -extensions self_leaf -days 3650"
    .. " -subj /CN=localhost -keyout " .. q("selfsigned.key") .. " -out " .. q("selfsigned.crt"))

  -- expired: "openssl x509" (3.0) cannot set a start date, "openssl ca" can
  csr("expired", "localhost")
  run("openssl ca -batch" .. C .. " -notext -in " .. q(".ca/expired.csr")
    .. " -out " .. q("expired.crt") .. " -extfile " .. shell_quote(cnf)
    .. " -extensions server_localhost"
    .. " -startdate 20200101000000Z -enddate 20200102000000Z")

  for _, p in pairs(result) do
    if p ~= dir then
      assert(file_exists(p), "certs.make: missing " .. p)
      execute("chmod 644 " .. shell_quote(p))
    end
  end
  write_file(dir .. "/" .. MARKER, "ok\n")
  return result
end

-- A full set made in a fresh temporary directory /tmp/<prefix>.XXXXXX
-- (its certs/ folder): the certs.make table and that directory, which the
-- caller removes (util.remove_tree) when done.
function M.in_temp_dir(prefix)
  local tmp = util.mkdtemp(prefix)
  return M.make(tmp .. "/certs"), tmp
end

-- Why the TLS specs cannot run here (LuaSec missing when luasec is true,
-- openssl missing), or nil when they can.
function M.missing(luasec)
  if luasec and not pcall(require, "ssl") then return "LuaSec is not installed" end
  if not M.available() then return "openssl is not installed" end
  return nil
end

return M
