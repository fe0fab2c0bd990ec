-- The stable error kinds and the one place that builds the failure triple
-- (nil, "kind: text", info) returned by every public function.
local M = {}

M.kinds = {
  connect = true, timeout = true, closed = true, tls = true, protocol = true,
  greeting = true, auth = true, sender = true, recipients = true, data = true,
  size = true, unsupported = true, argument = true,
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

-- A reply as users see it.
function M.reply(code, enhanced, text)
  return { code = code, enhanced = enhanced, message = text }
end

-- "550 5.1.1 No such user" on one line, for error messages.
function M.describe(code, enhanced, text)
  local s = tostring(code)
  if enhanced then s = s .. " " .. enhanced end
  text = text and text:gsub("\n", " / ") or ""
  if enhanced and text:sub(1, #enhanced) == enhanced then
    text = text:sub(#enhanced + 2)
  end
  if text ~= "" then s = s .. " " .. text end
  return s
end

return M
