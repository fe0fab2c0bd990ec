#!/usr/bin/env bash
# Runs the busted suite against smtp.core built with AddressSanitizer,
# LeakSanitizer and UBSan.
#
#   scripts/asan.sh                         # every spec file
#   scripts/asan.sh spec/engine_spec.lua    # some of them
#   ASAN_SELFTEST=0 scripts/asan.sh         # skip the leak-detection self-test
#   ASAN_EXCLUDE_TAGS=postfix,resty scripts/asan.sh   # passed to busted
#   ASAN_SRC_DIR=/tmp/copy/csrc ASAN_BUILD_DIR=build/asan-copy scripts/asan.sh
#                                           # build from a throwaway copy of csrc
#
# Output: one TAP stream on stdout (renumbered, closing plan), then a
# summary.  Besides busted's own tests it has one line for the build, two
# for the leak self-test and one per spec file saying whether that busted
# process produced a sanitizer report.  Exit status: 0 clean; 1 a test
# failed but no sanitizer said anything; 2 a sanitizer report (ASan, UBSan
# or LSan) -- this wins over 1; 3 the build or the self-test failed.
#
# How it works
# - The module is compiled (all of CORE_SRC + BIND_SRC, read from the
#   Makefile) with -fsanitize=address,undefined into build/asan/smtp/core.so;
#   busted gets --cpath=./build/asan/?.so (a generated --helper checks that
#   smtp.core really resolves there).
# - lua5.4 itself is not instrumented, so libasan is LD_PRELOADed into the
#   busted process together with build/asan/preload_shim.so, which
#   (a) removes LD_PRELOAD from the environment in a constructor, so the
#       servers and tools the specs start (sh, ps, smtp-sink, Postfix, nginx,
#       python3, openssl, ...) run without ASan: with the runtime inherited,
#       `ps` hangs forever at exit and every child would print its own leak
#       report; the whole suite, foreign daemons included, therefore runs;
#   (b) turns dlclose() into a no-op, so core.so is still mapped when LSan
#       reports at exit (lua_close unloads C modules; otherwise core.so's
#       frames print as "<unknown module>").
# - fast_unwind_on_malloc=0: the frame-pointer unwinder stops inside
#   libcrypto/libssl (built without frame pointers), so an OpenSSL object
#   leaked by core.so would have no core.so frame in its stack.
# - The LSan suppressions file (build/asan/lsan.supp) may only name
#   libraries that never have core.so below them.  LSan matches a pattern
#   against EVERY frame of the allocation stack (function, module, file), so
#   "leak:lua5.4" or "leak:libcrypto.so" would also hide a real leak in
#   core.so: every call into core.so comes from lua5.4 frames, and an SSL
#   object it leaks is allocated in libcrypto.  The self-test builds a
#   throwaway copy of the module (build/asan/selftest, never csrc/) with a
#   probe that leaks one malloc and one SSL_CTX, and checks that both are
#   still reported with these exact options and suppressions.
set -u
cd "$(dirname "$0")/.." || exit 3
ROOT=$(pwd)

LUA=${LUA:-lua5.4}
BUSTED=${BUSTED:-/usr/bin/busted}
CC=${CC:-cc}
OUT=${ASAN_BUILD_DIR:-build/asan}
TIMEOUT=${ASAN_TIMEOUT:-900}          # seconds per spec file
LPATH='./lua/?.lua;./lua/?/init.lua;./?.lua'

n=0 failed=0 sanitizer=0 buildfail=0
tap_ok()   { n=$((n + 1)); echo "ok $n - $*"; }
tap_fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
tap_skip() { n=$((n + 1)); echo "ok $n - # SKIP $*"; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)

# ---- build -----------------------------------------------------------------
make_var() {   # the value of a Makefile variable, without editing the Makefile
  # shellcheck disable=SC2016
  printf 'asan-print-var:\n\t@echo $(%s)\n' "$1" | make -s --no-print-directory -f Makefile -f - asan-print-var 2>/dev/null
}
SRC=$(make_var CORE_SRC)
if [ -n "$SRC" ]; then SRC="$SRC $(make_var BIND_SRC)"; else SRC=$(echo csrc/*.c); fi
SRCDIR=${ASAN_SRC_DIR:-csrc}
SRC=$(for s in $SRC; do echo "$SRCDIR/${s#csrc/}"; done | xargs)
LUA_CFLAGS=$(pkg-config --cflags "$LUA" 2>/dev/null || echo "-I/usr/include/$LUA")
SSL_CFLAGS=$(pkg-config --cflags openssl 2>/dev/null)
SSL_LIBS="$(pkg-config --libs openssl 2>/dev/null || echo "-lssl -lcrypto") $(pkg-config --libs libidn libidn2 2>/dev/null || echo "-lidn -lidn2")"
# SMTP_ENGINE_DEBUG: an engine transition missing from its tables aborts
# (csrc/smtp_engine.c), so every spec run here also checks the state diagram.
CFLAGS_ASAN="-std=c99 -Wall -Wextra -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fPIC -fvisibility=hidden -DSMTP_ENGINE_DEBUG"

LIBASAN=$($CC -print-file-name=libasan.so)
mkdir -p "$OUT/smtp" "$OUT/obj" "$OUT/selftest/smtp"

build() {
  local objs="" s o
  for s in $SRC; do
    o=$OUT/obj/$(basename "${s%.c}").o
    # shellcheck disable=SC2086
    $CC $CFLAGS_ASAN $LUA_CFLAGS $SSL_CFLAGS -I"$SRCDIR" -c -o "$o" "$s" || return 1
    objs="$objs $o"
  done
  # shellcheck disable=SC2086
  $CC -fsanitize=address,undefined -shared -o "$OUT/smtp/core.so" $objs $SSL_LIBS || return 1
  # LD_PRELOAD shim: see the header.
  cat > "$OUT/preload_shim.c" <<'EOF'
#include <stdlib.h>
/* Keep the ASan runtime out of every process the specs start. */
__attribute__((constructor)) static void asan_sh_unpreload(void) { unsetenv("LD_PRELOAD"); }
/* Keep C modules mapped until exit so LSan can name their frames. */
int dlclose(void *handle) { (void)handle; return 0; }
EOF
  $CC -shared -fPIC -O1 -o "$OUT/preload_shim.so" "$OUT/preload_shim.c" || return 1
  cat > "$OUT/lsan.supp" <<'EOF'
# LeakSanitizer suppressions for scripts/asan.sh (generated: edit the script).
# A pattern matches if ANY frame's function, module or file contains it, so
# only name code that never calls into smtp/core.so.  NEVER add lua5.4,
# libcrypto, libssl or libc here: every core.so leak has lua5.4 frames below
# it, and an SSL object core.so leaks is allocated inside libcrypto.  The
# self-test in scripts/asan.sh fails if core.so leaks stop being reported.
# lua5.4's line editor (only used interactively)
leak:libreadline.so
leak:libtinfo.so
EOF
  cat > "$OUT/helper.lua" <<EOF
-- busted --helper for scripts/asan.sh: fail loudly if smtp.core would not
-- come from the ASan build.
local p = package.searchpath("smtp.core", package.cpath)
if p ~= "./$OUT/smtp/core.so" then
  error("asan.sh: smtp.core resolves to " .. tostring(p) .. ", not ./$OUT/smtp/core.so")
end
EOF
}

if build > "$log" 2>&1; then
  warnings=$(grep -c 'warning:' "$log")
  tap_ok "asan: build $OUT/smtp/core.so ($(echo "$SRC" | wc -w) files, $warnings compiler warnings)"
  grep -E 'warning:' "$log" | head -10 | sed 's/^/# /'
else
  tap_fail "asan: build $OUT/smtp/core.so"
  sed 's/^/# /' "$log" | tail -40
  buildfail=1
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:fast_unwind_on_malloc=0:malloc_context_size=40:detect_stack_use_after_return=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$ROOT/$OUT/lsan.supp:print_suppressions=0"
PRELOAD="$LIBASAN:$ROOT/$OUT/preload_shim.so"

SAN_RE='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|AddressSanitizer:DEADLYSIGNAL'

# Leak blocks of an LSan report: "core" if a frame is in core.so, else "foreign".
classify_leaks() {
  awk '
    /^(Direct|Indirect) leak of/ { if (blk) print kind, blk; blk = $0; kind = "foreign"; next }
    blk && /^ *#[0-9]+ / { if ($0 ~ /smtp\/core\.so|csrc\/|lsmtp_probe/) kind = "core"; next }
    blk && /^$/ { print kind, blk; blk = "" }
    END { if (blk) print kind, blk }' "$1"
}

# ---- self-test: would a real leak in core.so be reported? --------------------
selftest() {
  local st=$OUT/selftest objs=""
  cat > "$st/probe.c" <<'EOF'
/* Throwaway leak probe, linked only into build/asan/selftest/smtp/core.so. */
#include <stdlib.h>
#include <string.h>
#include <openssl/ssl.h>
#include <lua.h>
void *volatile lsmtp_probe_sink;
__attribute__((noinline)) static void lsmtp_probe_malloc(void) {
    char *p = malloc(4242);            /* never freed */
    memset(p, 'x', 4242);
    lsmtp_probe_sink = p; lsmtp_probe_sink = NULL;
}
__attribute__((noinline)) static void lsmtp_probe_ssl(void) {
    lsmtp_probe_sink = SSL_CTX_new(TLS_client_method());   /* never freed */
    lsmtp_probe_sink = NULL;
}
__attribute__((visibility("default"))) int lsmtp_probe(lua_State *L) {
    lsmtp_probe_malloc();
    lsmtp_probe_ssl();
    (void)L;
    return 0;
}
EOF
  # shellcheck disable=SC2086
  $CC $CFLAGS_ASAN $LUA_CFLAGS $SSL_CFLAGS -c -o "$st/probe.o" "$st/probe.c" || return 1
  for s in $SRC; do objs="$objs $OUT/obj/$(basename "${s%.c}").o"; done
  # shellcheck disable=SC2086
  $CC -fsanitize=address,undefined -shared -o "$st/smtp/core.so" $objs "$st/probe.o" $SSL_LIBS || return 1
  # The whole module loads (as in the suite), then the probe runs from Lua.
  env LD_PRELOAD="$PRELOAD" "$LUA" -e "
    package.cpath = '$ROOT/$st/?.so;' .. package.cpath
    assert(require('smtp.core'))
    assert(package.loadlib('$ROOT/$st/smtp/core.so', 'lsmtp_probe'))()
    os.exit(0, true)" 2>&1
}

if [ "${ASAN_SELFTEST:-1}" = 1 ] && [ $buildfail = 0 ]; then
  selftest > "$log" 2>&1
  got=$(classify_leaks "$log")
  if echo "$got" | grep -qE '^core Direct leak of 4242 byte' && grep -q 'lsmtp_probe_malloc' "$log"; then
    tap_ok "asan: self-test: a malloc leaked in core.so is reported (suppressions $OUT/lsan.supp)"
  else
    tap_fail "asan: self-test: a malloc leaked in core.so was NOT reported"; buildfail=1
    sed 's/^/# /' "$log" | head -30
  fi
  if grep -q 'lsmtp_probe_ssl' "$log" && echo "$got" | grep -q '^core Direct leak'; then
    tap_ok "asan: self-test: an SSL_CTX leaked by core.so is reported with a core.so frame"
  else
    tap_fail "asan: self-test: an SSL_CTX leaked by core.so was NOT reported"; buildfail=1
    sed 's/^/# /' "$log" | head -30
  fi
elif [ $buildfail = 0 ]; then
  tap_skip "asan: self-test (ASAN_SELFTEST=0)"
fi

# ---- specs -----------------------------------------------------------------
if [ $# -gt 0 ]; then specs=("$@"); else specs=(spec/*_spec.lua); fi
tagopt=()
[ -n "${ASAN_EXCLUDE_TAGS:-}" ] && tagopt=(--exclude-tags="$ASAN_EXCLUDE_TAGS")
reports=()

if [ $buildfail = 0 ]; then
  for f in "${specs[@]}"; do
    t0=$(date +%s)
    timeout "$TIMEOUT" env LD_PRELOAD="$PRELOAD" "$LUA" "$BUSTED" -o TAP \
      --lpath="$LPATH" --cpath="./$OUT/?.so" --helper="./$OUT/helper.lua" \
      "${tagopt[@]}" "$f" > "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    oks=$(grep -cE '^(not )?ok ' "$log")
    while IFS= read -r line; do
      case "$line" in
        "not ok "*) desc=${line#not ok }; desc=${desc#* }; desc=${desc#- }; tap_fail "$desc" ;;
        "ok "*)
          desc=${line#ok }; desc=${desc#* }; desc=${desc#- }
          case "$desc" in
            "# SKIP"*) tap_skip "${desc#\# SKIP }" ;;
            *) tap_ok "$desc" ;;
          esac ;;
        "#"*) echo "$line" ;;
      esac
    done < <(grep -E '^(ok |not ok |#)' "$log")
    if grep -qE "$SAN_RE" "$log"; then
      sanitizer=1
      what=$(grep -m1 -oE "($SAN_RE).*" "$log" | cut -c1-160)
      tap_fail "asan: $f: sanitizer report: $what"
      # The report itself, for the reader.
      # (frames of the uninstrumented interpreter are left out: they say nothing)
      grep -vE '^(ok |not ok |#|1\.\.)' "$log" | grep -E -A40 "$SAN_RE|^(Direct|Indirect) leak of" \
        | grep -vE '\((/usr/bin/)?lua5\.[0-9]\+0x[0-9a-f]+\)$|^--$' | head -100 | sed 's/^/# /'
      if grep -q 'LeakSanitizer' "$log"; then
        classify_leaks "$log" | awk '{c[$1]++} END {printf "# leak blocks: %d with a frame in core.so/csrc, %d without\n", c["core"], c["foreign"]}'
      fi
      reports+=("$f: $what")
    elif [ "$rc" -eq 124 ]; then
      tap_fail "asan: $f: timed out after ${TIMEOUT}s ($oks tests reported)"
    elif ! grep -qE '^1\.\.[0-9]+' "$log"; then
      first=$(grep -vE '^(ok |not ok |#|1\.\.)' "$log" | grep -m1 -E '\S' || true)
      tap_fail "asan: $f: busted exited $rc after $oks tests: ${first:-no output}"
    elif [ "$rc" -ne 0 ] && ! grep -qE '^not ok ' "$log"; then
      tap_fail "asan: $f: busted exited $rc without a failing test"
      grep -vE '^(ok |not ok )' "$log" | tail -15 | sed 's/^/# /'
    else
      tap_ok "asan: $f: no sanitizer report ($oks tests, ${secs}s)"
    fi
  done
fi

echo "1..$n"
total=$(( $(date +%s) - start ))
echo "# asan.sh: $n TAP lines, $failed not ok, sanitizer reports: ${#reports[@]}, ${total}s"
for r in "${reports[@]}"; do echo "#   $r"; done
if [ $buildfail = 1 ]; then exit 3; fi
if [ $sanitizer = 1 ]; then exit 2; fi
[ "$failed" -eq 0 ] || exit 1
exit 0
