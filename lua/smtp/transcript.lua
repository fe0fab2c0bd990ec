-- Transcript printers in the style of Python smtplib's set_debuglevel, and
-- the redaction that keeps credentials out of every transcript.
local core = require "smtp.core"

local M = {}

-- How much of a message body a transcript shows before cutting it.
M.body_preview = 4096

local escapes = { ["\r"] = "\\r", ["\n"] = "\\n", ["\t"] = "\\t", ["\\"] = "\\\\", ["'"] = "\\'" }

-- Python-like repr of bytes: 'EHLO x\r\n', non-printables as \xNN.
function M.repr(s, prefix)
  local body = s:gsub("[%c'\\\128-\255]", function(c)
    return escapes[c] or string.format("\\x%02x", c:byte())
  end)
  return (prefix or "") .. "'" .. body .. "'"
end

-- Command lines whose arguments are secrets, and what the transcript shows.
function M.redact_command(line)
  local verb, mech = line:match("^(%a+)%s+(%S+)")
  if verb and verb:upper() == "AUTH" then
    if line:match("^%a+%s+%S+%s+%S") then
      return verb .. " " .. mech .. " <redacted>\r\n"
    end
  end
  return line
end

local function timestamp()
  local t = core.time()
  local whole = math.floor(t)
  return os.date("%H:%M:%S", whole) .. string.format(".%06d", math.floor((t - whole) * 1e6))
end

-- Turns the `debug` option into a function(kind, text), or nil.
-- 1: stderr; 2: stderr with a time stamp; a function: called as is.
function M.printer(debug)
  if debug == nil or debug == false or debug == 0 then return nil end
  if type(debug) == "function" then return debug end
  if debug ~= 1 and debug ~= 2 then
    error("debug must be 1, 2 or a function", 3)
  end
  -- Inside OpenResty stderr is nginx's; its own log is the place.
  local ngx = rawget(_G, "ngx")
  if ngx and ngx.log and ngx.get_phase then
    local log, level = ngx.log, ngx.DEBUG
    return function(kind, text)
      log(level, kind, ": ", text)
    end
  end
  local stamp = debug == 2
  return function(kind, text)
    if stamp then
      io.stderr:write(timestamp(), " ", kind, ": ", text, "\n")
    else
      io.stderr:write(kind, ": ", text, "\n")
    end
  end
end

-- A message body for the transcript: the first few KB, then its size.
function M.preview(body, total)
  if #body <= M.body_preview and total == #body then
    return M.repr(body, "b")
  end
  return M.repr(body:sub(1, M.body_preview), "b") ..
    string.format(" ... (%d octets in all)", total)
end

return M
