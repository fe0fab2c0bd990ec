-- The blocking transport: the C socket from smtp.core (non-blocking I/O
-- with poll against deadlines). Its userdata already speaks the transport
-- interface: send(s, i), receive(), flush(engine), settimeouts(), close().
local core = require "smtp.core"

local M = {}

-- timeout: seconds per operation; deadline: absolute core.now() time;
-- path: a Unix-domain socket instead of host and port.
function M.connect(host, port, timeout, deadline, path)
  local sock = core.socket()
  sock:settimeouts(timeout, deadline)
  local ok, code, msg
  if path then
    ok, code, msg = sock:connect_unix(path)
  else
    ok, code, msg = sock:connect(host, port)
  end
  if not ok then return nil, code, msg end
  return sock
end

return M
