-- The smtp-send configuration file: msmtp-like accounts.
--
--   # comment lines start with #
--   defaults                    # settings for every account that follows
--   tls starttls
--
--   account work
--   server smtp.example.com     # host[:port] or smtp:// smtps:// lmtp:// URL
--   port 587
--   user alice
--   passwordeval pass show mail/work
--   from Alice Example <alice@example.com>
--
--   account backup : work       # starts as a copy of "work"
--   user backup
--
--   default work
--
-- Keys: server (alias host), port, tls, cafile (alias tls_trust_file),
-- user, password, passwordeval, auth (a SASL mechanism, or on for the
-- best offered), insecure_auth (on/off: allow AUTH without TLS), from,
-- helo, timeout, protocol. A value may
-- be written in double quotes (with \" and \\ inside).
--
-- Whatever it holds, the file must be owned by the user running smtp-send
-- (or by root) and writable by nobody else, as msmtp requires: whoever can
-- change it can make passwordeval run their commands or send the password
-- to their server. So must a passwordeval program named by a path, and a
-- --password-file. A file with a password line must moreover not be
-- accessible by group or others at all. Owner and mode come from
-- `ls -lLnd` (POSIX, numeric owner, symbolic links followed), as there is
-- no stat() in plain Lua.
local options = require "smtp.cli.options"

local M = {}

local KEYS = {
  server = "server", host = "server", port = "port", tls = "tls",
  cafile = "cafile", tls_trust_file = "cafile", user = "user",
  password = "password", passwordeval = "passwordeval", from = "from",
  helo = "helo", timeout = "timeout", protocol = "protocol", auth = "auth",
  insecure_auth = "insecure_auth",
}

local BOOLEAN = { on = true, yes = true, ["true"] = true, off = false, no = false, ["false"] = false }

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function unquote(v)
  if #v >= 2 and v:sub(1, 1) == '"' and v:sub(-1) == '"' then
    return (v:sub(2, -2):gsub('\\(["\\])', "%1"))
  end
  return v
end

local function check_value(key, value)
  if key == "port" then
    local p = tonumber(value)
    if not value:match("^%d+$") or p < 1 or p > 65535 then return nil, "not a port number" end
    return p
  elseif key == "timeout" then
    local t = tonumber(value)
    if not t or t <= 0 then return nil, "not a positive number of seconds" end
    return t
  elseif key == "tls" then
    if not options.TLS_MODES[value] then return nil, "must be auto, starttls, implicit or none" end
  elseif key == "protocol" then
    if value ~= "smtp" and value ~= "lmtp" then return nil, "must be smtp or lmtp" end
  elseif key == "insecure_auth" then
    local b = BOOLEAN[value:lower()]
    if b == nil then return nil, "must be on or off" end
    return b
  elseif key == "auth" then
    if not value:match("^[%w%-_]+$") then return nil, "must be a SASL mechanism name (or on)" end
    if value:lower() == "on" then return false end
    return value:upper()
  elseif key == "server" then
    local s, err = options.parse_server(value)
    if not s then return nil, err end
    return s
  elseif key == "from" and value == "" then
    return nil, "needs an address"
  end
  return value
end

-- Parses the text of a configuration file. name is used in messages.
-- Returns { accounts = { [name] = settings }, order = { names },
-- default = name or nil, has_password = bool, path = name } or nil, message.
function M.parse(text, name)
  name = name or "config"
  local cfg = { accounts = {}, order = {}, has_password = false, path = name }
  local defaults = {}
  local current           -- the settings table being filled
  local lineno = 0
  local function fail(msg) return nil, name .. ":" .. lineno .. ": " .. msg end
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    line = line:gsub("\r$", "")
    local key, value = line:match("^%s*(%S+)%s*(.-)%s*$")
    if key and key:sub(1, 1) ~= "#" then
      value = unquote(value)
      if key == "defaults" then
        if value ~= "" then return fail("defaults takes no value") end
        current = defaults
      elseif key == "account" then
        local acct, bases = value:match("^([^:%s]+)%s*:%s*(.+)$")
        acct = acct or value
        if acct == "" or acct:find("%s") then return fail("account needs a name (account NAME [: BASE, ...])") end
        if cfg.accounts[acct] then return fail("account " .. acct .. " is defined twice") end
        current = copy(defaults)
        if bases then
          for base in bases:gmatch("[^,%s]+") do
            local b = cfg.accounts[base]
            if not b then return fail("account " .. base .. " is not defined (yet)") end
            for k, v in pairs(b) do current[k] = v end
          end
        end
        cfg.accounts[acct] = current
        cfg.order[#cfg.order + 1] = acct
      elseif key == "default" then
        if value == "" then return fail("default needs an account name") end
        cfg.default = value
      elseif KEYS[key] then
        if not current then
          return fail(key .. " outside an account (start with 'account NAME' or 'defaults')")
        end
        local k = KEYS[key]
        local v, err = check_value(k, value)
        if v == nil then return fail(key .. ": " .. err) end
        if k == "password" then cfg.has_password = true end
        -- password and passwordeval replace each other (inherited ones, too).
        if k == "password" then current.passwordeval = nil end
        if k == "passwordeval" then current.password = nil end
        current[k] = v
      else
        return fail("unknown setting " .. string.format("%q", key))
      end
    end
  end
  if cfg.default and not cfg.accounts[cfg.default] then
    return nil, name .. ": the default account " .. cfg.default .. " is not defined"
  end
  return cfg
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

-- What `ls -lLnd` says about path (POSIX: mode, links, numeric owner,
-- ...; -L: a symbolic link's target, the file that will be read):
-- { mode = "-rw-r--r--", uid = 1000 }, or nil, message. No LuaFileSystem
-- needed.
function M.file_info(path)
  local p = io.popen("LC_ALL=C ls -lLnd -- " .. shell_quote(path) .. " 2>/dev/null")
  if not p then return nil, "cannot run ls" end
  local line = p:read("*l")
  p:close()
  -- The mode may be followed by + (ACL), . (SELinux) or @ (xattrs).
  local mode, uid = (line or ""):match("^([%-bcdlpsD][rwxsStTlL%-]+)%S*%s+%d+%s+(%d+)%s")
  if not mode or #mode < 10 then return nil, "cannot read the permissions of " .. path end
  return { mode = mode:sub(1, 10), uid = tonumber(uid) }
end

-- The permission bits of path as a string like "-rw-r--r--"; nil, message
-- on failure.
function M.mode_string(path)
  local info, err = M.file_info(path)
  if not info then return nil, err end
  return info.mode
end

local my_uid
-- The (effective) user id running smtp-send, from `id -u`; nil when unknown.
function M.uid()
  if my_uid == nil then
    local p = io.popen("id -u 2>/dev/null")
    local line = p and p:read("*l")
    if p then p:close() end
    my_uid = tonumber(line or "") or false
  end
  return my_uid or nil
end

-- The first line a command prints, or nil when it prints none or fails.
local function first_line(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local line = p:read("*l")
  local ok = p:close()
  if ok == nil or ok == false then return nil end
  if line == "" then return nil end
  return line
end

-- The login name of whoever runs smtp-send, as sendmail takes it for a
-- message without a sender: $LOGNAME, else $USER, when that name's user id
-- is the real user id (so that after su, or with a stale variable, the
-- name still belongs to the user actually sending); else the name of the
-- real user id (`id -run`). Returns name, or nil, message when the real
-- user id has no name. run(cmd) -> first line or nil (default: popen).
function M.login(getenv, run)
  getenv = getenv or os.getenv
  run = run or first_line
  local uid = run("id -ru")
  if not uid or not uid:match("^%d+$") then return nil, "cannot tell who runs smtp-send (id -ru failed)" end
  for _, var in ipairs({ "LOGNAME", "USER" }) do
    local name = getenv(var)
    if name and name ~= "" and run("id -u -- " .. shell_quote(name)) == uid then return name end
  end
  local name = run("id -run")
  if name and not name:match("^%d+$") then return name end
  return nil, "user id " .. uid .. " has no login name"
end

-- Whether smtp-send may act on what the file at path says (a configuration
-- file, a passwordeval program, a password file): owned by the user running
-- smtp-send or by root, and neither group- nor other-writable, whatever it
-- holds. (A POSIX ACL that lets someone else write shows as group write:
-- the group bits are the ACL mask.) /dev/null, always empty, is fine.
-- what names the file in the message. Returns true or nil, message.
function M.trusted(path, what)
  if path == "/dev/null" then return true end
  local info, err = M.file_info(path)
  if not info then return nil, what .. " " .. path .. ": " .. err .. ": refusing to use it" end
  local me = M.uid()
  if not me then
    return nil, what .. " " .. path .. ": cannot tell who runs smtp-send (id -u failed): refusing to use it"
  end
  if info.uid ~= me and info.uid ~= 0 then
    return nil, string.format("%s %s is owned by uid %d, not by you (uid %d) or root: refusing to use it",
      what, path, info.uid, me)
  end
  local group, others = info.mode:sub(6, 6) == "w", info.mode:sub(9, 9) == "w"
  if group or others then
    return nil, string.format("%s %s is writable by %s (%s): refusing to use it; run: chmod go-w %s",
      what, path, group and others and "group and others" or group and "its group" or "others",
      info.mode, shell_quote(path))
  end
  return true
end

-- The program a passwordeval command runs when its first word names it by
-- a path (/..., ./..., ~/..., $HOME/...), so that it can be checked like the
-- configuration file; nil for a program looked up on PATH. VAR=value words
-- in front are skipped, a first word in quotes is unquoted, $NAME and
-- ${NAME} (outside single quotes) and a leading ~/ are expanded.
function M.command_path(cmd, getenv)
  getenv = getenv or os.getenv
  local function expand(w)
    return (w:gsub("%${?([%a_][%w_]*)}?", function(name) return getenv(name) or "" end))
  end
  local rest, word = cmd
  repeat
    rest = rest:gsub("^%s+", "")
    local q = rest:sub(1, 1)
    if q == "'" then
      word, rest = rest:match("^'([^']*)'(.*)$")
    elseif q == '"' then
      word, rest = rest:match('^"([^"\\`]*)"(.*)$')
      if word then word = expand(word) end
    else
      word, rest = rest:match("^([^%s;&|<>()`'\"\\]*)(.*)$")
      -- A word that goes on in quotes, or ~user: not worth guessing.
      if not word or rest:match("^['\"\\]") or word:match("^~[^/]") then return nil end
      if word:match("^[%a_][%w_]*=") then
        word = nil                                   -- VAR=value: the next word
      else
        if word:sub(1, 2) == "~/" then word = "$HOME" .. word:sub(2) end
        word = expand(word)
      end
    end
    if not rest then return nil end
  until word
  if not word:find("/", 1, true) then return nil end
  return word
end

-- true when neither group nor others have any access to path.
function M.private(path)
  local mode, err = M.mode_string(path)
  if not mode then return nil, err end
  return mode:sub(5, 10) == "------", mode
end

-- Where the configuration is looked for when --config is not given.
function M.default_path(getenv)
  getenv = getenv or os.getenv
  local xdg = getenv("XDG_CONFIG_HOME")
  if xdg and xdg ~= "" then return xdg .. "/lua-smtp/config" end
  local home = getenv("HOME")
  if home and home ~= "" then return home .. "/.config/lua-smtp/config" end
  return nil
end

-- Reads and checks a configuration file. A missing file is an error only
-- when required (given with --config); otherwise the result is an empty
-- configuration. Returns cfg or nil, message.
function M.load(path, required)
  local empty = { accounts = {}, order = {}, has_password = false }
  if not path then
    if required then return nil, "no configuration file" end
    return empty
  end
  local f, ferr = io.open(path, "rb")
  if not f then
    -- Absent is fine unless asked for; present but unreadable is not.
    if required or M.mode_string(path) then return nil, "cannot read " .. ferr end
    return empty
  end
  local text = f:read("*a") or ""
  f:close()
  local ok, terr = M.trusted(path, "configuration file")
  if not ok then return nil, terr end
  local cfg, err = M.parse(text, path)
  if not cfg then return nil, err end
  if cfg.has_password then
    local private, mode = M.private(path)
    if private == nil then return nil, mode end
    if not private then
      return nil, path .. " holds a password but is accessible by others (" .. mode ..
        "); run: chmod 600 " .. shell_quote(path)
    end
  end
  return cfg
end

-- The account to use: the named one, else the "default NAME" line, else an
-- account called "default", else none (an empty table). Returns settings,
-- name or nil, message.
function M.select(cfg, name)
  if name then
    local a = cfg.accounts[name]
    if not a then
      return nil, "no account " .. string.format("%q", name) ..
        (cfg.path and " in " .. cfg.path or " (no configuration file)")
    end
    return a, name
  end
  if cfg.default then return cfg.accounts[cfg.default], cfg.default end
  if cfg.accounts.default then return cfg.accounts.default, "default" end
  return {}, nil
end

-- Runs a passwordeval command; its first output line is the password.
function M.eval_password(cmd)
  local p = io.popen(cmd, "r")
  if not p then return nil, "cannot run passwordeval" end
  local line = p:read("*l")
  p:read("*a")
  local ok, how, code = p:close()
  if type(ok) == "number" then code, ok = ok, ok == 0 end   -- Lua 5.1 returns a number or true
  if ok == nil or ok == false then
    return nil, "passwordeval command failed (" .. tostring(how) .. " " .. tostring(code) .. ")"
  end
  if not line or line == "" then return nil, "passwordeval command printed no password" end
  return (line:gsub("\r$", ""))
end

return M
