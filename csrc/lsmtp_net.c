/* smtp.core: the blocking transport (smtp_net, smtp_tls) and the certificate
 * name check. One part of the binding behind luaopen_smtp_core
 * (csrc/lsmtp.c), whose conventions it follows. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsmtp.h"
#include "smtp_net.h"
#include "smtp_tls.h"

#define RECV_SIZE 16384

/* ---- blocking transport ------------------------------------------------- */

typedef struct lsmtp_socket {
    smtp_net net;
    smtp_tls *tls;     /* NULL until STARTTLS or implicit TLS */
    double timeout;    /* seconds per operation; <= 0: none */
    double deadline;   /* absolute; 0: none */
} lsmtp_socket;

static int l_socket_new(lua_State *L)
{
    lsmtp_socket *u = lua_newuserdata(L, sizeof *u);
    smtp_net_init(&u->net);
    u->tls = NULL;
    u->timeout = 30;
    u->deadline = 0;
    lsmtp_setclass(L, SOCKET_MT);
    return 1;
}

static lsmtp_socket *check_socket(lua_State *L)
{
    return lsmtp_checkudata(L, 1, SOCKET_MT);
}

/* The earlier of "timeout from now" and the whole-send deadline. */
static double op_deadline(const lsmtp_socket *u)
{
    double d = u->timeout > 0 ? smtp_net_now() + u->timeout : 0;
    if (u->deadline > 0 && (d == 0 || u->deadline < d))
        d = u->deadline;
    return d;
}

static ssize_t sock_send(lsmtp_socket *u, const char *p, size_t len)
{
    if (u->tls)
        return smtp_tls_send(u->tls, &u->net, p, len, op_deadline(u));
    return smtp_net_send(&u->net, p, len, op_deadline(u));
}

static int push_net_error(lua_State *L, lsmtp_socket *u, int rc)
{
    lua_pushnil(L);
    lua_pushstring(L, code_name(rc));
    lua_pushstring(L, u->net.errmsg[0] ? u->net.errmsg : smtp_strerror(rc));
    return 3;
}

/* sock:settimeouts(timeout_seconds_or_nil, absolute_deadline_or_nil) */
static int l_socket_settimeouts(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    u->timeout = luaL_optnumber(L, 2, 0);
    u->deadline = luaL_optnumber(L, 3, 0);
    return 0;
}

static int l_socket_connect(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    const char *host = luaL_checkstring(L, 2);
    const char *port;
    int rc;
    lua_pushvalue(L, 3);
    port = luaL_checkstring(L, -1); /* numbers are turned into strings */
    if (u->net.fd >= 0)
        return luaL_error(L, "smtp.core: socket already connected");
    rc = smtp_net_connect(&u->net, host, port, op_deadline(u));
    if (rc)
        return push_net_error(L, u, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* sock:connect_unix(path) -> true | nil, code, msg */
static int l_socket_connect_unix(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    const char *path = luaL_checkstring(L, 2);
    int rc;
    if (u->net.fd >= 0)
        return luaL_error(L, "smtp.core: socket already connected");
    rc = smtp_net_connect_unix(&u->net, path, op_deadline(u));
    if (rc)
        return push_net_error(L, u, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* sock:send(s [, i]) -> bytes sent from position i (1-based) | nil, code, msg */
static int l_socket_send(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    ssize_t n;
    luaL_argcheck(L, i >= 1 && (size_t)i <= len + 1, 3, "position out of range");
    if (u->net.fd < 0)
        return push_net_error(L, u, SMTP_E_CLOSED);
    if ((size_t)i > len) {
        lua_pushinteger(L, 0);
        return 1;
    }
    n = sock_send(u, s + i - 1, len - (size_t)i + 1);
    if (n < 0)
        return push_net_error(L, u, (int)n);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* sock:flush(engine): writes the engine's whole output without copying it
 * into a Lua string. -> true | nil, code, msg */
static int l_socket_flush(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    lsmtp_engine *eu = lsmtp_checkudata(L, 2, ENGINE_MT);
    size_t len;
    const char *p;
    if (!eu->live)
        return luaL_error(L, "smtp.core: engine used after free");
    if (u->net.fd < 0)
        return push_net_error(L, u, SMTP_E_CLOSED);
    while ((p = smtp_engine_output(&eu->e, &len)), len > 0) {
        ssize_t n = sock_send(u, p, len);
        if (n < 0)
            return push_net_error(L, u, (int)n);
        smtp_engine_consumed(&eu->e, (size_t)n);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_socket_receive(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    char buf[RECV_SIZE];
    ssize_t n;
    if (u->net.fd < 0)
        return push_net_error(L, u, SMTP_E_CLOSED);
    n = u->tls ? smtp_tls_recv(u->tls, &u->net, buf, sizeof buf, op_deadline(u))
               : smtp_net_recv(&u->net, buf, sizeof buf, op_deadline(u));
    if (n < 0)
        return push_net_error(L, u, (int)n);
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int l_socket_close(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    smtp_tls_free(u->tls);
    u->tls = NULL;
    smtp_net_close(&u->net);
    return 0;
}

static const char *opt_field(lua_State *L, int t, const char *name)
{
    const char *v;
    lua_getfield(L, t, name);
    /* Strings only: lua_tostring would turn a number into a new string
     * that nothing holds once popped. */
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "smtp.core: TLS option '%s' must be a string", name);
    v = lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive: the options table holds it */
    return v;
}

/* sock:starttls{ servername=, verify=, cafile=, capath=, cert=, key= }
 * -> true | nil, code, msg. Verification is on unless verify == false. */
static int l_socket_starttls(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    smtp_tls_opts o;
    int rc;
    luaL_checktype(L, 2, LUA_TTABLE);
    smtp_tls_opts_init(&o);
    o.servername = opt_field(L, 2, "servername");
    o.cafile = opt_field(L, 2, "cafile");
    o.capath = opt_field(L, 2, "capath");
    o.cert = opt_field(L, 2, "cert");
    o.key = opt_field(L, 2, "key");
    lua_getfield(L, 2, "verify");
    o.verify = !(lua_isboolean(L, -1) && !lua_toboolean(L, -1));
    lua_pop(L, 1);
    if (u->net.fd < 0)
        return push_net_error(L, u, SMTP_E_CLOSED);
    if (u->tls)
        return luaL_error(L, "smtp.core: TLS is already on");
    rc = smtp_tls_start(&u->tls, &u->net, &o, op_deadline(u));
    if (rc)
        return push_net_error(L, u, rc == SMTP_E_ARGUMENT ? SMTP_E_TLS : rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* sock:tls_info() -> version, cipher | nil */
static int l_socket_tls_info(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    if (!u->tls)
        return 0;
    lua_pushstring(L, smtp_tls_version(u->tls));
    lua_pushstring(L, smtp_tls_cipher(u->tls));
    return 2;
}

static const luaL_Reg socket_methods[] = {
    {"settimeouts", l_socket_settimeouts},
    {"connect", l_socket_connect},
    {"connect_unix", l_socket_connect_unix},
    {"send", l_socket_send},
    {"flush", l_socket_flush},
    {"receive", l_socket_receive},
    {"close", l_socket_close},
    {"starttls", l_socket_starttls},
    {"tls_info", l_socket_tls_info},
    {"__gc", l_socket_close},
    {NULL, NULL},
};

/* core.tls_check_name(der, servername) -> true | nil, "tls", message: the
 * certificate name rule of the C transport (smtp_tls_check_name), for a
 * transport that does its own TLS (the cosocket one) and hands over the
 * server's certificate (DER). The message reads like the C transport's:
 * "certificate verify failed: hostname mismatch (server name 'x')". */
static int l_tls_check_name(lua_State *L)
{
    size_t len;
    const char *der = luaL_checklstring(L, 1, &len);
    int bad;
    const char *name = check_cstring(L, 2, &bad);
    char why[256];
    int rc;
    if (bad)
        return push_result(L, SMTP_E_TLS,
                           "certificate verify failed: the server name contains a NUL byte");
    rc = smtp_tls_check_name(der, len, name, why, sizeof why);
    if (rc == 1) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, code_name(SMTP_E_TLS));
    lua_pushfstring(L, "certificate verify failed: %s", why);
    return 3;
}

static const luaL_Reg net_functions[] = {
    {"socket", l_socket_new},
    {"tls_check_name", l_tls_check_name},
    {NULL, NULL},
};

/* Registers the classes and the core functions of this part into the
 * table on top of the stack. */
void lsmtp_open_net(lua_State *L)
{
    lsmtp_newclass(L, SOCKET_MT, socket_methods);
    lsmtp_setfuncs(L, net_functions);
}
