-- Chooses the transport for a connection: OpenResty cosockets inside nginx
-- (where a blocking socket would stall the worker), the blocking C socket
-- everywhere else. Both speak the same small interface:
--   send(s, i) -> n | nil, code, msg      receive() -> bytes | nil, code, msg
--   starttls(opts) -> true | nil, code, msg
--   settimeouts(timeout, deadline)        close()
-- with codes timeout, closed, connect, tls, io.
local M = {}

local function in_nginx()
  local ngx = rawget(_G, "ngx")
  return ngx ~= nil and type(ngx.socket) == "table" and ngx.socket.tcp ~= nil
end

-- host, port; timeout: seconds per operation; deadline: absolute
-- smtp.core.now() time or nil.
function M.connect(host, port, timeout, deadline)
  if in_nginx() then
    return require("smtp.transport.cosocket").connect(host, port, timeout, deadline)
  end
  return require("smtp.transport.socket").connect(host, port, timeout, deadline)
end

return M
