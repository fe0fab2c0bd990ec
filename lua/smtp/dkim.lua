-- DKIM signing (RFC 6376; Ed25519 from RFC 8463). The message is read
-- once to hash its body (streamed through smtp.core, constant memory) and
-- to take its header section; the header fields are canonicalised here and
-- signed in C on OpenSSL's EVP. The DKIM-Signature field is then sent in
-- front of the message, which is read a second time.
local core = require "smtp.core"
local errors = require "smtp.errors"

local M = {}

-- Signed when present (RFC 6376 5.4.1 and the headers mail providers
-- look at); From is signed once more than it occurs, so that no From can
-- be added after signing.
M.DEFAULT_HEADERS = { "from", "to", "cc", "subject", "date", "message-id", "mime-version",
                      "content-type", "list-unsubscribe", "list-unsubscribe-post", "reply-to",
                      "in-reply-to", "references" }

-- The most octets of header section that is read and kept for signing.
M.MAX_HEADER = 1048576

local ALGORITHMS = { ["rsa-sha256"] = true, ["ed25519-sha256"] = true }
local CANON = { simple = true, relaxed = true }

local function fail(text) return errors.fail("argument", "dkim: " .. text) end

local function read_key(key)
  if type(key) == "string" then return key end
  local f, err = io.open(key.path, "rb")
  if not f then return nil, "cannot read the key: " .. tostring(err) end
  local pem = f:read("*a")
  f:close()
  return pem
end

-- Parsing a PEM key costs more than signing with it (RSA-2048: ~0.5 ms of
-- the ~0.75 ms per message), so each parsed key is kept while anything uses
-- it: a session, or the next send naming the same key.
local parsed = setmetatable({}, { __mode = "v" })

local function parsed_key(alg, pem)
  local id = alg .. "\0" .. pem
  local key = parsed[id]
  if key then return key end
  local made, _, err = core.dkim_key(alg, pem)
  if not made then return nil, err end
  parsed[id] = made
  return made
end

-- One signer from the caller's table (types were checked by smtp.options):
-- { domain, selector, key, alg, header_canon, body_canon, headers } or
-- nil, err.
local function signer(s)
  if not s.domain:match("^[%w%-%.]+$") or s.domain:find("..", 1, true) then
    return nil, "invalid domain " .. errors.quote(s.domain)
  end
  if not s.selector:match("^[%w%-%.]+$") then
    return nil, "invalid selector " .. errors.quote(s.selector)
  end
  local alg = s.algorithm or "rsa-sha256"
  if not ALGORITHMS[alg] then return nil, "algorithm must be rsa-sha256 or ed25519-sha256" end
  local hc, bc = (s.canonicalization or "relaxed/relaxed"):match("^(%a+)/?(%a*)$")
  if bc == "" then bc = "simple" end   -- RFC 6376 3.5: "relaxed" alone is relaxed/simple
  if not (hc and CANON[hc] and CANON[bc]) then
    return nil, "canonicalization must be simple or relaxed for header/body, e.g. relaxed/relaxed"
  end
  local pem, kerr = read_key(s.key)
  if not pem then return nil, kerr end
  local key, kmsg = parsed_key(alg, pem)
  if not key then return nil, kmsg end
  local headers = {}
  for _, h in ipairs(s.headers or M.DEFAULT_HEADERS) do
    if not h:match("^[!-9;-~]+$") then return nil, "invalid header name " .. errors.quote(h) end
    headers[#headers + 1] = h:lower()
  end
  return { domain = s.domain:lower(), selector = s.selector, key = key, alg = alg,
           header_canon = hc, body_canon = bc, headers = headers }
end

-- The signers for a dkim option: a table or a list of tables.
function M.signers(opt)
  local list = opt[1] and opt or { opt }
  local out = {}
  for i, s in ipairs(list) do
    local sg, err = signer(s)
    if not sg then return nil, err end
    out[i] = sg
  end
  return out
end

-- The header section (CRLF lines) as fields: { lname =, raw = "Name: v\r\n ..." }.
local function fields(header)
  local out = {}
  for line in header:gmatch("([^\r]*)\r\n") do
    if line:match("^[ \t]") and #out > 0 then
      out[#out].raw = out[#out].raw .. line .. "\r\n"
    else
      local name = line:match("^([^:]+):") or line
      out[#out + 1] = { lname = name:gsub("[ \t]+$", ""):lower(), raw = line .. "\r\n" }
    end
  end
  return out
end

-- RFC 6376 3.4.1 and 3.4.2.
local function canon_header(raw, relaxed)
  if not relaxed then return raw end
  local name, value = raw:match("^([^:]*):(.*)$")
  value = value:gsub("\r\n", ""):gsub("[ \t]+", " "):gsub("^ ", ""):gsub(" $", "")
  return name:gsub("[ \t]+$", ""):lower() .. ":" .. value .. "\r\n"
end

-- Folds tags into a field of lines within 78 columns: tokens are written
-- as given, FWS ("\r\n\t") put between them where a line would be too long.
local function fold(tokens)
  local out, col = { "DKIM-Signature:" }, 15
  for _, tok in ipairs(tokens) do
    local text, join = tok[1], tok[2]
    if col + #join + #text > 76 then
      out[#out + 1] = "\r\n\t"
      col = 1
      if join == " " then join = "" end
    end
    out[#out + 1] = join .. text
    col = col + #join + #text
  end
  return table.concat(out), col
end

-- The DKIM-Signature field for one signer: header is the message's header
-- section, bh its body hash (raw octets).
local function signature_field(sg, header, bh, now)
  local relaxed = sg.header_canon == "relaxed"
  local list = fields(header)
  local used, signed, names = {}, {}, {}
  for _, h in ipairs(sg.headers) do
    -- RFC 6376 5.4.2: instances are taken from the bottom up.
    for i = #list, 1, -1 do
      if list[i].lname == h and not used[i] then
        used[i] = true
        signed[#signed + 1] = canon_header(list[i].raw, relaxed)
        names[#names + 1] = h
        break
      end
    end
  end
  -- From once more than it occurs: a non-existent instance signs as empty.
  names[#names + 1] = "from"
  local tokens = {
    { "v=1;", " " }, { "a=" .. sg.alg .. ";", " " },
    { "c=" .. sg.header_canon .. "/" .. sg.body_canon .. ";", " " },
    { "d=" .. sg.domain .. ";", " " }, { "s=" .. sg.selector .. ";", " " },
    { "t=" .. string.format("%d", now) .. ";", " " },
  }
  for i, n in ipairs(names) do
    tokens[#tokens + 1] = { (i == 1 and "h=" or "") .. n .. (i < #names and ":" or ";"), i == 1 and " " or "" }
  end
  tokens[#tokens + 1] = { "bh=" .. core.b64encode(bh, 0) .. ";", " " }
  tokens[#tokens + 1] = { "b=", " " }
  local prefix, col = fold(tokens)
  local data = table.concat(signed) .. canon_header(prefix, relaxed):gsub("\r\n$", "")
  local sig = sg.key:sign(data)
  -- The signature continues the b= tag; FWS inside it is ignored by verifiers.
  local b64, pieces, at = core.b64encode(sig, 0), {}, 1
  local room = math.max(76 - col, 8)
  while at <= #b64 do
    pieces[#pieces + 1] = b64:sub(at, at + room - 1)
    at = at + room
    room = 72
  end
  return prefix .. table.concat(pieces, "\r\n\t") .. "\r\n"
end

-- Reads a message source to its end for the signers: returns the
-- DKIM-Signature fields (in the order given) or nil, err, info.
function M.sign(signers, source)
  local hashers = {}
  for _, sg in ipairs(signers) do
    if not hashers[sg.body_canon] then
      hashers[sg.body_canon] = core.dkim_body(sg.body_canon == "relaxed", M.MAX_HEADER)
    end
  end
  while true do
    local chunk, err = source()
    if chunk == nil then
      if err then return errors.fail("argument", "dkim: reading the message failed: " .. tostring(err)) end
      break
    end
    for _, h in pairs(hashers) do
      local ok, _, msg = h:update(chunk)
      if not ok then return fail(msg) end
    end
  end
  local header, hashes = nil, {}
  for canon, h in pairs(hashers) do
    local head, bh = h:finish()
    header, hashes[canon] = head, bh
  end
  local out, now = {}, os.time()
  for i, sg in ipairs(signers) do
    out[i] = signature_field(sg, header, hashes[sg.body_canon], now)
  end
  return table.concat(out)
end

-- A source that sends prefix, then what source gives.
function M.prepend(prefix, source)
  local first = true
  return function()
    if first then
      first = false
      return prefix
    end
    return source()
  end
end

return M
