-- lua-smtp 0.1.0, the release (builtin build type, no Makefile needed).
-- scripts/release-rock.sh packs it with the release tarball into
-- build/lua-smtp-0.1.0-1.src.rock, which installs offline:
--   luarocks install build/lua-smtp-0.1.0-1.src.rock
-- Builds smtp.core for the target Lua (5.1 .. 5.4, LuaJIT via
-- --lua-version=5.1 LUA_INCDIR=/usr/include/luajit-2.1) against OpenSSL.
--   luarocks make rockspec/lua-smtp-scm-1.rockspec            (from the checkout)
--   luarocks --lua-version=5.4 --tree=/tmp/t make rockspec/lua-smtp-scm-1.rockspec
-- The module list must name every file under lua/ and every csrc/*.c:
-- scripts/rockspec-check.sh checks that nothing is missing. (The builtin
-- type also copies the whole lua/ directory into the tree, so a Lua module
-- missing here is still installed, but not registered in the manifest.)
rockspec_format = "3.0"
package = "lua-smtp"
version = "0.1.0-1"
source = {
   url = "https://github.com/lua-smtp/lua-smtp/archive/refs/tags/v0.1.0.tar.gz",
   dir = "lua-smtp-0.1.0",
}
description = {
   summary = "SMTP client for Lua with a C protocol engine",
   detailed = [[
Submits mail over SMTP/LMTP: message building (MIME, encoded headers,
attachments), pipelining, STARTTLS and implicit TLS (OpenSSL), SASL
authentication, sessions for many messages. Runs on Lua 5.1-5.4 and LuaJIT
with a blocking C socket, and inside OpenResty/nginx on cosockets.
bin/smtp-debug-server (a local test server) needs LuaSocket.
]],
   labels = { "smtp", "email", "mail", "openresty" },
   homepage = "https://github.com/lua-smtp/lua-smtp",
   license = "MIT",
}
dependencies = {
   "lua >= 5.1",
}
external_dependencies = {
   OPENSSL = {
      header = "openssl/ssl.h",
      library = "ssl",
   },
   LIBIDN = {        -- GNU libidn: SASLprep (Debian: libidn-dev)
      header = "stringprep.h",
      library = "idn",
   },
   LIBIDN2 = {       -- IDNA2008 (Debian: libidn2-dev)
      header = "idn2.h",
      library = "idn2",
   },
}
build = {
   type = "builtin",
   modules = {
      ["smtp.core"] = {
         sources = {
            "csrc/lsmtp.c",
            "csrc/lsmtp_codec.c",
            "csrc/lsmtp_dkim.c",
            "csrc/lsmtp_engine.c",
            "csrc/lsmtp_idna.c",
            "csrc/lsmtp_net.c",
            "csrc/lsmtp_sasl.c",
            "csrc/smtp_mem.c",
            "csrc/smtp_buf.c",
            "csrc/smtp_codec.c",
            "csrc/smtp_dkim.c",
            "csrc/smtp_engine.c",
            "csrc/smtp_error.c",
            "csrc/smtp_frame.c",
            "csrc/smtp_net.c",
            "csrc/smtp_reply.c",
            "csrc/smtp_sasl.c",
            "csrc/smtp_tls.c",
         },
         incdirs = { "csrc", "$(OPENSSL_INCDIR)", "$(LIBIDN_INCDIR)", "$(LIBIDN2_INCDIR)" },
         libdirs = { "$(OPENSSL_LIBDIR)", "$(LIBIDN_LIBDIR)", "$(LIBIDN2_LIBDIR)" },
         libraries = { "ssl", "crypto", "idn", "idn2" },
      },
      ["smtp"] = "lua/smtp.lua",
      ["smtp.address"] = "lua/smtp/address.lua",
      ["smtp.cli.config"] = "lua/smtp/cli/config.lua",
      ["smtp.cli.json"] = "lua/smtp/cli/json.lua",
      ["smtp.cli.main"] = "lua/smtp/cli/main.lua",
      ["smtp.cli.options"] = "lua/smtp/cli/options.lua",
      ["smtp.cli.progress"] = "lua/smtp/cli/progress.lua",
      ["smtp.cli.rawmsg"] = "lua/smtp/cli/rawmsg.lua",
      ["smtp.transcript"] = "lua/smtp/transcript.lua",
      ["smtp.dkim"] = "lua/smtp/dkim.lua",
      ["smtp.errors"] = "lua/smtp/errors.lua",
      ["smtp.job"] = "lua/smtp/job.lua",
      ["smtp.header"] = "lua/smtp/header.lua",
      ["smtp.message"] = "lua/smtp/message.lua",
      ["smtp.mime"] = "lua/smtp/mime.lua",
      ["smtp.mimetypes"] = "lua/smtp/mimetypes.lua",
      ["smtp.options"] = "lua/smtp/options.lua",
      ["smtp.proxy"] = "lua/smtp/proxy.lua",
      ["smtp.report"] = "lua/smtp/report.lua",
      ["smtp.session"] = "lua/smtp/session.lua",
      ["smtp.submit"] = "lua/smtp/submit.lua",
      ["smtp.extensions"] = "lua/smtp/extensions.lua",
      ["smtp.transport"] = "lua/smtp/transport.lua",
      ["smtp.transport.copas"] = "lua/smtp/transport/copas.lua",
      ["smtp.transport.cosocket"] = "lua/smtp/transport/cosocket.lua",
      ["smtp.transport.cqueues"] = "lua/smtp/transport/cqueues.lua",
      ["smtp.transport.socket"] = "lua/smtp/transport/socket.lua",
      ["smtp.transport.tls_lua"] = "lua/smtp/transport/tls_lua.lua",
   },
   install = {
      bin = {
         ["smtp-send"] = "bin/smtp-send",
         ["smtp-debug-server"] = "bin/smtp-debug-server",
      },
   },
   -- The manual, smtp-send(1): LuaRocks has no place for man pages, so it
   -- lands in the rock's directory, <tree>/lib/luarocks/rocks-<lua>/
   -- lua-smtp/<version>/man/smtp-send.1 (`luarocks show --rock-dir
   -- lua-smtp` prints the directory; read it with man -l). Naming any
   -- directory here stops LuaRocks copying README and *.md into doc/, so
   -- the documentation (docs/) is named too.
   copy_directories = { "man", "docs" },
}
