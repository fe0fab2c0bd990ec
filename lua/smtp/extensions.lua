-- ESMTP parameters a transaction may need: DSN (RFC 3461), BODY=8BITMIME
-- (RFC 6152), SMTPUTF8 (RFC 6531). Each is used only when the server offers
-- it; a message that needs one the server lacks fails with kind
-- "unsupported" before anything of it is sent.
local errors = require "smtp.errors"
local address = require "smtp.address"

local M = {}

-- RFC 3461 4: "+" and "=" and anything outside "!".."~" as "+HH".
function M.xtext(s)
  return (s:gsub("[^!-*,-<>-~]", function(c) return string.format("+%02X", c:byte()) end))
end

-- RFC 6533 3 utf-8-addr-xtext, for ORCPT: ASCII but "+", "=", "\\" and
-- controls as itself, every other character as \x{HEX} of its code point.
function M.utf8_xtext(s)
  local out = {}
  -- Decoded by hand: Lua 5.1 and LuaJIT have no utf8 library.
  for ch in s:gmatch("[\1-\127\192-\255][\128-\191]*") do
    local b = ch:byte(1)
    local cp
    if b < 0x80 then
      cp = b
    else
      local n = #ch
      cp = b % (2 ^ (7 - n))
      for k = 2, n do cp = cp * 64 + ch:byte(k) % 64 end
    end
    if cp >= 0x21 and cp <= 0x7e and cp ~= 0x2b and cp ~= 0x3d and cp ~= 0x5c then
      out[#out + 1] = string.char(cp)
    else
      out[#out + 1] = string.format("\\x{%X}", math.floor(cp))
    end
  end
  return table.concat(out)
end

local notify_words = { never = "NEVER", success = "SUCCESS", failure = "FAILURE", delay = "DELAY" }

-- Validates a dsn option and returns it normalised, or nil, message.
-- dsn = { ret = "hdrs"|"full", envid = "...", notify = { "failure", "delay" } | "never", orcpt = true }
function M.check_dsn(dsn)
  if dsn == nil then return nil end
  if type(dsn) ~= "table" then return nil, "dsn must be a table" end
  local out = {}
  if dsn.ret ~= nil then
    local ret = type(dsn.ret) == "string" and dsn.ret:upper()
    if ret ~= "HDRS" and ret ~= "FULL" then return nil, "dsn.ret must be \"hdrs\" or \"full\"" end
    out.ret = ret
  end
  if dsn.envid ~= nil then
    if type(dsn.envid) ~= "string" or dsn.envid == "" or #dsn.envid > 100 then
      return nil, "dsn.envid must be a string of 1 to 100 octets"
    end
    out.envid = dsn.envid
  end
  if dsn.notify ~= nil then
    local list = type(dsn.notify) == "string" and { dsn.notify } or dsn.notify
    if type(list) ~= "table" or #list == 0 then return nil, "dsn.notify must be a list" end
    local words, never = {}, false
    for _, w in ipairs(list) do
      local word = type(w) == "string" and notify_words[w:lower()]
      if not word then return nil, "dsn.notify takes never, success, failure, delay" end
      if word == "NEVER" then never = true end
      words[#words + 1] = word
    end
    if never and #words > 1 then return nil, "dsn.notify: never excludes the others" end
    out.notify = table.concat(words, ",")
  end
  out.orcpt = dsn.orcpt and true or nil
  return out
end

local function has_non_ascii(s)
  return s:find("[\128-\255]") ~= nil
end

-- Parameters for one transaction. job: { envelope, dsn, eightbit
-- (true/false/nil: unknown), utf8_headers }. Returns { mail = string|nil,
-- rcpt = function(addr)|nil, guard = bool (refuse 8-bit octets while
-- streaming) } or nil, err, info.
-- MAIL parameters grow as one space-separated string (nil: none, the
-- usual case): no table per transaction.
local function add(m, w) return m and (m .. " " .. w) or w end

-- ascii: optional memo { [address] = address.ascii_domain(address) }.
function M.params(caps, job, ascii)
  caps = caps or {}
  local env = job.envelope
  local mail = nil   -- MAIL parameters (see add)
  -- Without SMTPUTF8 a non-ASCII domain goes as A-labels (RFC 5891); only
  -- a UTF-8 local part then still needs the extension.
  local from, to = env.from, env.to
  if not caps.SMTPUTF8 then
    local err, changed
    from = ascii and ascii[from]
    if not from then from, err = address.ascii_domain(env.from) end
    if not from then return errors.fail("argument", err, { stage = "mail" }) end
    for i, r in ipairs(env.to) do
      local a = ascii and ascii[r]
      if not a then
        a, err = address.ascii_domain(r)
        if not a then return errors.fail("argument", err, { stage = "rcpt" }) end
      end
      if a ~= r and not changed then
        changed = {}
        for j = 1, i - 1 do changed[j] = env.to[j] end
      end
      if changed then changed[i] = a end
    end
    to = changed or env.to
  end
  local utf8 = job.utf8_headers or has_non_ascii(from)
  if not utf8 then
    for _, r in ipairs(to) do if has_non_ascii(r) then utf8 = true break end end
  end
  if utf8 then
    if not caps.SMTPUTF8 then
      return errors.fail("unsupported", "the message needs SMTPUTF8 (non-ASCII addresses or" ..
        " headers) and the server does not offer it", { stage = "mail", temporary = false })
    end
    mail = add(mail, "SMTPUTF8")
  end
  local guard = false
  -- A UTF-8 envelope alone needs SMTPUTF8, not 8BITMIME: the content may
  -- still be 7-bit. UTF-8 headers are 8-bit content.
  if job.eightbit or job.utf8_headers then
    if not caps["8BITMIME"] then
      return errors.fail("unsupported", "the message has 8-bit data and the server does not" ..
        " offer 8BITMIME", { stage = "mail", temporary = false })
    end
    mail = add(mail, "BODY=8BITMIME")
  elseif job.eightbit == nil then
    -- A stream of unknown content: declare 8-bit when the server takes it,
    -- otherwise refuse 8-bit octets as they come.
    if caps["8BITMIME"] then mail = add(mail, "BODY=8BITMIME") else guard = true end
  end
  local dsn = job.dsn
  local rcpt_extra
  if dsn then
    rcpt_extra = {}
    if not caps.DSN then
      return errors.fail("unsupported", "delivery status notifications were asked for and the" ..
        " server does not offer DSN", { stage = "mail", temporary = false })
    end
    if dsn.ret then mail = add(mail, "RET=" .. dsn.ret) end
    if dsn.envid then mail = add(mail, "ENVID=" .. M.xtext(dsn.envid)) end
    if dsn.notify then rcpt_extra[#rcpt_extra + 1] = "NOTIFY=" .. dsn.notify end
  end
  local rcpt_params
  if dsn and (#rcpt_extra > 0 or dsn.orcpt) then
    local fixed = table.concat(rcpt_extra, " ")
    rcpt_params = function(addr)
      if dsn.orcpt then
        local orcpt = has_non_ascii(addr) and ("utf-8;" .. M.utf8_xtext(addr))
          or ("rfc822;" .. M.xtext(addr))
        return fixed == "" and ("ORCPT=" .. orcpt) or (fixed .. " ORCPT=" .. orcpt)
      end
      return fixed
    end
  end
  return { mail = mail, rcpt = rcpt_params, guard = guard,
           from = from, to = to }
end

-- Wraps a source so that an 8-bit octet ends it with kind "unsupported"
-- (the server did not offer 8BITMIME and the content was not known).
function M.seven_bit_only(source)
  return function()
    local chunk, err = source()
    if type(chunk) == "string" and has_non_ascii(chunk) then
      return nil, { kind = "unsupported", message = "the message has 8-bit data and the server" ..
        " does not offer 8BITMIME" }
    end
    return chunk, err
  end
end

return M
