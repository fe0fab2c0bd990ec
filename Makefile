# lua-smtp build. `make` builds smtp.core for $(LUA); `make LUA=luajit` (or
# lua5.1, lua5.2, lua5.3) builds it for another interpreter into its own
# build/<interpreter>/ directory, so several builds live side by side.

LUA       ?= lua5.4
LUA_PC    ?= $(LUA)
LUA_CFLAGS ?= $(shell pkg-config --cflags $(LUA_PC) 2>/dev/null)
# The version directory used by install paths (5.4, 5.1, ...).
LUA_VER   ?= $(shell $(LUA) -e 'io.write((_VERSION:gsub("Lua ", "")))' 2>/dev/null)

CC        ?= cc
OPT       ?= -O2 -g
WARN      := -std=c99 -Wall -Wextra -Werror
CFLAGS    ?=
MODFLAGS  := -fPIC -fvisibility=hidden
SANFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer

BUILD     := build/$(LUA)
MODULE    := $(BUILD)/smtp/core.so

CORE_SRC  := csrc/smtp_mem.c csrc/smtp_buf.c csrc/smtp_error.c csrc/smtp_reply.c csrc/smtp_frame.c \
             csrc/smtp_engine.c csrc/smtp_codec.c csrc/smtp_net.c csrc/smtp_tls.c csrc/smtp_sasl.c \
             csrc/smtp_dkim.c
# The Lua binding, one file per subsystem behind luaopen_smtp_core (keep the
# rockspecs' source lists in step: scripts/rockspec-check.sh checks them).
BIND_SRC  := csrc/lsmtp.c csrc/lsmtp_engine.c csrc/lsmtp_codec.c csrc/lsmtp_sasl.c \
             csrc/lsmtp_net.c csrc/lsmtp_dkim.c csrc/lsmtp_idna.c
SSL_CFLAGS ?= $(shell pkg-config --cflags openssl 2>/dev/null)
SSL_LIBS  ?= $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
# GNU libidn (SASLprep) and libidn2 (IDNA2008): Debian's libidn-dev, libidn2-dev.
IDN_CFLAGS ?= $(shell pkg-config --cflags libidn libidn2 2>/dev/null)
IDN_LIBS  ?= $(shell pkg-config --libs libidn libidn2 2>/dev/null || echo -lidn -lidn2)
DEP_CFLAGS := $(SSL_CFLAGS) $(IDN_CFLAGS)
DEP_LIBS  := $(SSL_LIBS) $(IDN_LIBS)
CORE_HDR  := $(wildcard csrc/*.h)
C_TESTS   := $(patsubst csrc/test/%.c,build/check/%,$(wildcard csrc/test/test_*.c))

PREFIX    ?= /usr/local
LUA_LIBDIR   ?= $(PREFIX)/lib/lua/$(LUA_VER)
LUA_SHAREDIR ?= $(PREFIX)/share/lua/$(LUA_VER)
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man

LUA_FILES := $(shell find lua -name '*.lua')

all: $(MODULE)

$(MODULE): $(CORE_SRC) $(BIND_SRC) $(CORE_HDR) | build-deps
	@mkdir -p $(@D)
	$(CC) $(WARN) $(OPT) $(CFLAGS) $(MODFLAGS) $(LUA_CFLAGS) $(DEP_CFLAGS) -Icsrc -shared \
		-o $@ $(CORE_SRC) $(BIND_SRC) $(LDFLAGS) $(DEP_LIBS)

# The C libraries the core links, each named with its Debian package when missing.
build-deps:
	@for lib in openssl:libssl-dev libidn:libidn-dev libidn2:libidn2-dev; do \
		pkg-config --exists $${lib%%:*} 2>/dev/null || { \
			echo "smtp.core needs $${lib%%:*} (Debian: apt-get install $${lib##*:})" >&2; exit 1; }; \
	done

# C unit tests, always with AddressSanitizer and UBSan.
build/check/%: csrc/test/%.c $(CORE_SRC) $(CORE_HDR)
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g $(SANFLAGS) -DSMTP_ENGINE_DEBUG $(DEP_CFLAGS) -Icsrc -o $@ $< $(CORE_SRC) $(DEP_LIBS)

check: $(C_TESTS)
	@set -e; for t in $(C_TESTS); do echo "== $$t"; $$t; done

# The same tests without sanitizers, for valgrind (scripts/valgrind.sh runs
# the allocation-failure one under memcheck).
build/valgrind/%: csrc/test/%.c $(CORE_SRC) $(CORE_HDR)
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g -DSMTP_ENGINE_DEBUG $(DEP_CFLAGS) -Icsrc -o $@ $< $(CORE_SRC) $(DEP_LIBS)

# The allocation-failure run alone (make check runs it too): every
# allocation of its scenarios failed in turn, under ASan.
failmalloc: build/check/test_failmalloc
	@build/check/test_failmalloc

deps:
	@sh scripts/deps.sh test

deps-demo:
	@sh scripts/deps.sh demo

test: deps all
	@bash scripts/run-tests.sh

demo: deps-demo all
	@bash scripts/demo.sh

# The option reference and the LuaLS annotations, from lua/smtp/options.lua.
docs:
	$(LUA) scripts/gen-options.lua .

lint:
	luacheck -q lua spec bin examples bench scripts load

install: all
	install -d $(DESTDIR)$(LUA_LIBDIR)/smtp $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(MODULE) $(DESTDIR)$(LUA_LIBDIR)/smtp/core.so
	for f in $(patsubst lua/%,%,$(LUA_FILES)); do \
		install -D -m 644 lua/$$f $(DESTDIR)$(LUA_SHAREDIR)/$$f || exit 1; done
	install -m 755 bin/smtp-debug-server $(DESTDIR)$(BINDIR)/smtp-debug-server
	install -m 755 bin/smtp-send $(DESTDIR)$(BINDIR)/smtp-send
	install -m 644 man/smtp-send.1 $(DESTDIR)$(MANDIR)/man1/smtp-send.1

bench: deps all
	@bash bench/run.sh

# The load test (load/): nginx workers with pooled sessions into a private
# Postfix, clean and under faults, with exact accounting. LOAD_N, LOAD_C,
# LOAD_RUNS (clean,restart,reset,stall), LOAD_WORKERS. Needs root.
load: all
	@$(MAKE) -s LUA=luajit LUA_PC=luajit
	@$(LUA) load/run.lua

asan:
	@bash scripts/asan.sh

valgrind: all
	@bash scripts/valgrind.sh

fuzz:
	@bash fuzz/run.sh $(or $(SECONDS),60)

clean:
	rm -rf build

.PHONY: all check failmalloc deps deps-demo test demo docs build-deps lint install clean bench load asan valgrind fuzz
