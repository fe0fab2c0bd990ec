-- What the event-loop transports (copas with LuaSec, cqueues with luaossl)
-- share about TLS, so that they check certificates as the C transport does:
-- verification on by default, TLS 1.2 at least, the system trust store
-- unless cafile/capath replace it, SNI for host names only, and the name
-- checked by smtp.core's one rule (core.tls_check_name) on the server's
-- certificate. Their handshakes run with OpenSSL's verification mode
-- "none" and check the result right after the handshake, before a byte of
-- SMTP goes through the connection: OpenSSL still verifies the chain and
-- keeps the result, which gives the C transport's texts
-- ("certificate verify failed: certificate has expired", ...), where a
-- failed handshake would only say "certificate verify failed".
local core = require "smtp.core"

local M = {}

-- An IP literal ("192.0.2.1", "::1", "[::1]") is never sent as SNI (RFC
-- 6066); the name check tells addresses from host names itself.
function M.ip_literal(name)
  return name:find(":", 1, true) ~= nil or name:match("^%[.*%]$") ~= nil or
    name:match("^%d+%.%d+%.%d+%.%d+$") ~= nil
end

local function readable(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- The system trust store when neither cafile nor capath is given: what
-- OpenSSL's defaults are on Debian (SSL_CERT_FILE / SSL_CERT_DIR first, as
-- OpenSSL reads them). Returns cafile, capath.
function M.trust(opts)
  if opts.cafile or opts.capath then return opts.cafile, opts.capath end
  local file = os.getenv("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
  local dir = os.getenv("SSL_CERT_DIR") or "/etc/ssl/certs"
  return readable(file) and file or nil, dir
end

-- The DER of a PEM certificate (the first one in pem).
function M.pem_to_der(pem)
  local body = type(pem) == "string" and
    pem:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-(.-)%-%-%-%-%-END CERTIFICATE%-%-%-%-%-")
  if not body then return nil end
  return (core.b64decode((body:gsub("%s", ""))))
end

-- After the handshake, with verify on: the chain's result (OpenSSL's
-- verify result and its text) and the name. verify_ok, verify_text: the
-- chain's result; der: the server's certificate; name: the server name.
-- Returns true, or nil, "tls", the C transport's text.
function M.check(verify_ok, verify_text, der, name)
  if not verify_ok then
    return nil, "tls", "certificate verify failed: " .. tostring(verify_text)
  end
  if not der then
    return nil, "tls", "certificate verify failed: the server sent no certificate"
  end
  local matched, code, msg = core.tls_check_name(der, name)
  if not matched then return nil, code, msg end
  return true
end

return M
