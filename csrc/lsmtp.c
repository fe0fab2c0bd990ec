/* smtp.core: the Lua binding of the C core, in parts by subsystem
 * (lsmtp_engine.c, lsmtp_codec.c, lsmtp_sasl.c, lsmtp_net.c, lsmtp_dkim.c,
 * lsmtp_idna.c; lsmtp.h is what they share, lsmtp_compat.h the Lua
 * 5.1-5.4 shims). This file holds the shared helpers, the small functions
 * (clock, message inspection, host name) and luaopen_smtp_core. Only these
 * files include Lua headers.
 *
 * Ownership: every C object lives inside a userdata whose __gc frees it, and
 * the metatable is set only once the object is initialised, so a Lua error
 * raised at any point (lua_pushlstring can raise) leaks nothing.
 *
 * Conventions: misuse (wrong argument types, a call in the wrong state)
 * raises; failures of the world return nil, "code", "message", with code one
 * of: argument, size, limit, line, timeout, closed, connect, io, protocol.
 */
#define _POSIX_C_SOURCE 200809L

#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "lsmtp.h"
#include "smtp_codec.h"
#include "smtp_dkim.h"
#include "smtp_engine.h"
#include "smtp_error.h"
#include "smtp_frame.h"
#include "smtp_net.h"
#include "smtp_sasl.h"
#include "smtp_tls.h"

#include <idn2.h>

#if defined(__GNUC__)
#define LSMTP_EXPORT __attribute__((visibility("default")))
#else
#define LSMTP_EXPORT
#endif

const char *code_name(int rc)
{
    switch (rc) {
    case SMTP_E_ARGUMENT: return "argument";
    case SMTP_E_SIZE: return "size";
    case SMTP_E_LIMIT: return "limit";
    case SMTP_E_LINE: return "line";
    case SMTP_E_TIMEOUT: return "timeout";
    case SMTP_E_CLOSED: return "closed";
    case SMTP_E_CONNECT: return "connect";
    case SMTP_E_PROTOCOL: return "protocol";
    case SMTP_E_STATE: return "state";
    case SMTP_E_NOMEM: return "nomem";
    case SMTP_E_TLS: return "tls";
    case SMTP_E_INSECURE: return "insecure";
    default: return "io";
    }
}

/* true, or nil + code + message; out of memory and state misuse raise. */
int push_result(lua_State *L, int rc, const char *msg)
{
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (rc == SMTP_E_NOMEM)
        return luaL_error(L, "not enough memory");
    if (rc == SMTP_E_STATE)
        return luaL_error(L, "smtp.core: %s", smtp_strerror(rc));
    lua_pushnil(L);
    lua_pushstring(L, code_name(rc));
    lua_pushstring(L, msg ? msg : smtp_strerror(rc));
    return 3;
}

/* A string argument that C will treat as NUL-terminated: an embedded NUL
 * would silently cut it, so it is refused like any other control byte. */
const char *check_cstring(lua_State *L, int idx, int *bad)
{
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    *bad = strlen(s) != len;
    return s;
}

const char *opt_cstring(lua_State *L, int idx, int *bad)
{
    if (lua_isnoneornil(L, idx)) {
        *bad = 0;
        return "";
    }
    return check_cstring(L, idx, bad);
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, smtp_net_now());
    return 1;
}

/* True when any octet of p[0..len) has the high bit set; eight octets at a
 * time (memcpy: no alignment assumed). */
static int has_8bit(const unsigned char *p, size_t len)
{
    uint64_t acc = 0, w;
    unsigned char tail = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < len; i++)
        tail |= p[i];
    return ((acc & UINT64_C(0x8080808080808080)) != 0) || (tail & 0x80) != 0;
}

/* Where the header section of a raw message ends (its blank line), or len. */
static size_t header_length(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i + 1 < len; i++) {
        if (s[i] == '\n' && (s[i + 1] == '\n' || (s[i + 1] == '\r' && i + 2 < len && s[i + 2] == '\n')))
            return i;
    }
    return len;
}

/* The size a message has on the wire after CRLF normalisation (bare CR and
 * bare LF become CRLF, a missing final CRLF is added): what SIZE= declares
 * (RFC 1870: CRLF pairs counted, dot-stuffing and the final dot not). */
static size_t normalized_size(const char *s, size_t len)
{
    size_t n = len;
    const char *p = s, *end = s + len;
    /* memchr finds the (rare) line ends; only they are looked at. */
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (p == s || p[-1] != '\r')
            n++; /* a bare LF becomes CRLF */
        p++;
    }
    p = s;
    while ((p = memchr(p, '\r', (size_t)(end - p))) != NULL) {
        if (p + 1 == end || p[1] != '\n')
            n++; /* a bare CR becomes CRLF */
        p++;
    }
    if (len > 0 && s[len - 1] != '\n' && s[len - 1] != '\r')
        n += 2;
    return n;
}

/* core.inspect(raw) -> true, eightbit, eightbit_headers, wire_size
 *                    | nil, "line", message */
static int l_inspect(lua_State *L)
{
    size_t len, head;
    const char *s = luaL_checklstring(L, 1, &len);
    smtp_frame f;
    smtp_frame_init(&f, SMTP_MAX_LINE);
    if (smtp_frame_check(&f, s, len) == SMTP_E_LINE) {
        lua_pushnil(L);
        lua_pushstring(L, "line");
        lua_pushfstring(L, "message line %d is longer than 998 octets (RFC 5322 2.1.1)",
                        (int)f.error_line);
        return 3;
    }
    lua_pushboolean(L, 1);
    if (!has_8bit((const unsigned char *)s, len)) {
        lua_pushboolean(L, 0);
        lua_pushboolean(L, 0);
    } else {
        head = header_length(s, len);
        lua_pushboolean(L, 1);
        lua_pushboolean(L, has_8bit((const unsigned char *)s, head));
    }
    lua_pushinteger(L, (lua_Integer)normalized_size(s, len));
    return 4;
}

/* core.valid_address(s): the engine's own rule for envelope addresses, so
 * a whole envelope can be checked before any command is staged. */
static int l_valid_address(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushboolean(L, strlen(s) == len && smtp_check_address(s) == 0);
    return 1;
}

/* Wall-clock seconds with microseconds, for transcript time stamps. */
static int l_time(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* core.date(t) -> the RFC 5322 3.3 date-time of t (seconds since the
 * epoch) in local time with its offset, e.g. "Sat, 28 Nov 2026 20:43:53
 * +0100". English names whatever the locale; the offset from comparing
 * localtime_r with gmtime_r (tm_gmtoff is not C99). One call: os.date and
 * os.time made four, each asking the C library to check the zone file. */
static int l_date(lua_State *L)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)luaL_checknumber(L, 1);
    struct tm lt, gt;
    long offset, day;
    char out[64];
    int n;
    if (localtime_r(&t, &lt) == NULL || gmtime_r(&t, &gt) == NULL)
        return luaL_argerror(L, 1, "time out of range");
    if (lt.tm_year != gt.tm_year)
        day = lt.tm_year < gt.tm_year ? -1 : 1;
    else
        day = lt.tm_yday - gt.tm_yday;
    offset = day * 86400L + (lt.tm_hour - gt.tm_hour) * 3600L + (lt.tm_min - gt.tm_min) * 60L +
             (lt.tm_sec - gt.tm_sec);
    n = snprintf(out, sizeof out, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld", days[lt.tm_wday % 7],
                 lt.tm_mday, months[lt.tm_mon % 12], lt.tm_year + 1900, lt.tm_hour, lt.tm_min,
                 lt.tm_sec, offset < 0 ? '-' : '+', labs(offset) / 3600, labs(offset) % 3600 / 60);
    if (n < 0 || (size_t)n >= sizeof out)
        return luaL_argerror(L, 1, "time out of range");
    lua_pushlstring(L, out, (size_t)n);
    return 1;
}

/* core.hostname([fqdn]): this machine's name (gethostname), the default
 * for EHLO. With fqdn true, a name without a dot is looked up
 * (getaddrinfo, AI_CANONNAME: /etc/hosts, then DNS, as sendmail and
 * Postfix find their own name) and its canonical name is returned when that
 * one has a dot; else the plain name. nil when there is no name. */
static int l_hostname(lua_State *L)
{
    char name[256];
    int fqdn = lua_toboolean(L, 1);
    if (gethostname(name, sizeof name) != 0 || name[0] == '\0') {
        lua_pushnil(L);
        return 1;
    }
    name[sizeof name - 1] = '\0';
    if (fqdn && strchr(name, '.') == NULL) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_CANONNAME;
        if (getaddrinfo(name, NULL, &hints, &res) == 0 && res != NULL) {
            const char *canon = res->ai_canonname;
            if (canon != NULL && strchr(canon, '.') != NULL && strlen(canon) < sizeof name) {
                lua_pushstring(L, canon);
                freeaddrinfo(res);
                return 1;
            }
        }
        if (res != NULL)
            freeaddrinfo(res);
    }
    lua_pushstring(L, name);
    return 1;
}

/* core.random_hex(n) -> 2n hex digits of n random octets (1 <= n <= 64)
 * from OpenSSL's generator: seeded by the system, reseeded after fork (so
 * nginx workers forked from one master draw different values), no file
 * opened per call. Raises when the generator fails: a weak fallback would
 * repeat boundaries and Message-IDs unnoticed. */
static int l_random_hex(lua_State *L)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char bytes[64];
    char hex[128];
    lua_Integer n = luaL_checkinteger(L, 1);
    lua_Integer i;
    luaL_argcheck(L, n >= 1 && n <= (lua_Integer)sizeof bytes, 1, "1 to 64 octets");
    if (RAND_bytes(bytes, (int)n) != 1)
        return luaL_error(L, "smtp.core: the random generator failed");
    for (i = 0; i < n; i++) {
        hex[2 * i] = digits[bytes[i] >> 4];
        hex[2 * i + 1] = digits[bytes[i] & 15];
    }
    lua_pushlstring(L, hex, (size_t)(2 * n));
    return 1;
}

static const luaL_Reg misc_functions[] = {
    {"random_hex", l_random_hex},
    {"now", l_now},
    {"time", l_time},
    {"date", l_date},
    {"valid_address", l_valid_address},
    {"inspect", l_inspect},
    {"hostname", l_hostname},
    {NULL, NULL},
};

LSMTP_EXPORT int luaopen_smtp_core(lua_State *L)
{
    lua_newtable(L);
    lsmtp_open_engine(L);
    lsmtp_open_codec(L);
    lsmtp_open_sasl(L);
    lsmtp_open_net(L);
    lsmtp_open_dkim(L);
    lsmtp_open_idna(L);
    lsmtp_setfuncs(L, misc_functions);
    lua_pushliteral(L, "0.1.0");
    lua_setfield(L, -2, "version");
    return 1;
}
