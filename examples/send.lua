-- Sends one message with the transcript on.
-- Usage: lua5.4 examples/send.lua [host] [port]
local smtp = require "smtp"

local host = arg[1] or os.getenv("SMTP_HOST") or "127.0.0.1"
local port = tonumber(arg[2] or os.getenv("SMTP_PORT") or "2525")

local res, err, info = smtp.send{
  host = host, port = port,
  tls = "none",            -- the local debug server speaks plain SMTP
  debug = 1,               -- smtplib-style transcript on stderr
  from = "Alice Example <alice@example.com>",
  to = { "Bob <bob@example.com>" },
  subject = "Hello from lua-smtp ✉",
  text = "Hi Bob,\n\nthis message went through lua-smtp's C engine.\n.\nA lone dot above, safely stuffed.\n",
}

if not res then
  io.stderr:write("send failed: ", err, "\n")
  if info.stage then io.stderr:write("stage: ", info.stage, ", temporary: ", tostring(info.temporary), "\n") end
  os.exit(1)
end
local n = #res.accepted
print("Message-ID: " .. res.message_id)
print(string.format("Message sent to %d recipient%s", n, n == 1 and "" or "s"))
