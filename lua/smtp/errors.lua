-- The stable error kinds and the one place that builds the failure triple
-- (nil, "kind: text", info) returned by every public function.
local M = {}

M.kinds = {
  connect = true, timeout = true, closed = true, tls = true, protocol = true,
  greeting = true, auth = true, sender = true, recipients = true, data = true,
  size = true, unsupported = true, argument = true,
}

-- Every code smtp.core and the transports return (nil, code, message), as
-- the public kind. The one table for it: an unknown code is a bug.
local code_kind = {
  argument = "argument", line = "argument", limit = "argument", source = "argument",
  size = "size", unsupported = "unsupported",
  timeout = "timeout", closed = "closed", io = "closed", connect = "connect",
  protocol = "protocol", tls = "tls", insecure = "auth",
}

function M.kind_of(code)
  return assert(code_kind[code], "smtp: unknown error code " .. tostring(code))
end

function M.is_code(code)
  return code_kind[code] ~= nil
end

-- The stage each engine command stands for (info.stage). A refused BDAT
-- chunk counts as the end of data: the data was refused.
M.stage_of = {
  greeting = "greeting", ehlo = "hello", helo = "hello", lhlo = "hello",
  starttls = "starttls", auth = "auth", mail = "mail", rcpt = "rcpt", data = "data",
  dot = "data_end", bdat = "data_end", rset = "rset", noop = "noop", quit = "quit",
}

-- Where the engine says an operation failed (its event's `fail`), as the
-- public kind, and the words that open the error text.
M.fail_kind = {
  greeting = "greeting", hello = "greeting", tls = "tls", auth = "auth", sender = "sender",
  recipients = "recipients", data = "data", command = "protocol",
  closing = "closed", protocol = "protocol",
}

M.fail_text = {
  greeting = "server refused the session",
  hello = "server refused EHLO and HELO",
  tls = "server refused STARTTLS",
  auth = "authentication failed",
  sender = "sender refused",
  recipients = "every recipient was refused",
  data = "message refused",
  command = "command refused",
  closing = "server closed the session",
  protocol = "invalid reply from server",
}

-- Kinds where trying again later can succeed whatever the server said.
local transient = { connect = true, timeout = true, closed = true }

-- info: { kind, message, code, enhanced, temporary, refused, stage, ... }
function M.fail(kind, text, info)
  assert(M.kinds[kind], "unknown error kind " .. tostring(kind))
  info = info or {}
  info.kind = kind
  info.message = info.message or text
  if info.temporary == nil then
    if info.code then
      info.temporary = info.code >= 400 and info.code < 500
    else
      info.temporary = transient[kind] or false
    end
  end
  return nil, kind .. ": " .. text, info
end

-- A value quoted for an error text, on one line whatever it holds: %q
-- would keep a newline as a backslash and a real line break.
function M.quote(v)
  return (string.format("%q", tostring(v)):gsub("\\\n", "\\n"))
end

-- A reply's text without the enhanced status code (RFC 2034) that starts
-- each of its lines: that code is in `enhanced`.
function M.text(enhanced, text)
  if not enhanced or not text then return text end
  if not text:find("\n", 1, true) then   -- one line: the usual case, no tables
    if text:sub(1, #enhanced) ~= enhanced then return text end
    return (text:sub(#enhanced + 1):gsub("^ ", ""))
  end
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:sub(1, #enhanced) == enhanced then
      line = line:sub(#enhanced + 1):gsub("^ ", "")
    end
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\n")
end

-- A reply as users see it.
function M.reply(code, enhanced, text)
  return { code = code, enhanced = enhanced, message = M.text(enhanced, text) }
end

-- "550 5.1.1 No such user" on one line, for error messages.
function M.describe(code, enhanced, text)
  local s = tostring(code)
  if enhanced then s = s .. " " .. enhanced end
  text = text and M.text(enhanced, text):gsub("\n", " / ") or ""
  if text ~= "" then s = s .. " " .. text end
  return s
end

return M
