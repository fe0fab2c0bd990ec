/* smtp.core: the blocking transport (smtp_net, smtp_tls) and the certificate
 * name check. One part of the binding behind luaopen_smtp_core
 * (csrc/lsmtp.c), whose conventions it follows. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
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
    char *sess_key;    /* where the TLS cache keeps this server's session */
    size_t sess_key_len;
} lsmtp_socket;

/* ---- TLS reuse: contexts and sessions for the life of the Lua state -------
 * registry[TLS_CACHE_KEY] = { ctx = { [key] = tls_ctx userdata },
 *   sess = { [key] = tls_session userdata }, nctx =, nsess =, built =,
 *   handshakes =, resumed = }.
 * A context is keyed by everything it is built from: verify, cafile,
 * capath, cert, key and what those files are now (smtp_tls_opts_stamp), so
 * a replaced file builds a new one. A session is keyed by its context's key,
 * the peer's address and port and the server name; smtp_tls_start_ctx
 * checks the name and verify setting again. Each table holds a bounded
 * number of entries; the userdata free their OpenSSL objects in __gc, so
 * the cache goes with the Lua state (one per nginx worker), and nothing is
 * global. */
#define TLS_CACHE_KEY "smtp.core.tls_cache"
#define TLS_CTX_MAX 16
#define TLS_SESSION_MAX 64

typedef struct lsmtp_tls_ctx {
    smtp_tls_ctx *c;
} lsmtp_tls_ctx;

typedef struct lsmtp_tls_session {
    smtp_tls_session *s;
} lsmtp_tls_session;

static int l_tls_ctx_gc(lua_State *L)
{
    lsmtp_tls_ctx *u = lsmtp_checkudata(L, 1, TLS_CTX_MT);
    smtp_tls_ctx_free(u->c);
    u->c = NULL;
    return 0;
}

static int l_tls_session_gc(lua_State *L)
{
    lsmtp_tls_session *u = lsmtp_checkudata(L, 1, TLS_SESSION_MT);
    smtp_tls_session_free(u->s);
    u->s = NULL;
    return 0;
}

static const luaL_Reg tls_ctx_methods[] = {{"__gc", l_tls_ctx_gc}, {NULL, NULL}};
static const luaL_Reg tls_session_methods[] = {{"__gc", l_tls_session_gc}, {NULL, NULL}};

/* Pushes the cache table, made on first use. */
static int push_tls_cache(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, TLS_CACHE_KEY);
    if (lua_istable(L, -1))
        return lua_gettop(L);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_newtable(L);
    lua_setfield(L, -2, "ctx");
    lua_newtable(L);
    lua_setfield(L, -2, "sess");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, TLS_CACHE_KEY);
    return lua_gettop(L);
}

static lua_Integer cache_count(lua_State *L, int cache, const char *name)
{
    lua_Integer n;
    lua_getfield(L, cache, name);
    n = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    return n;
}

static void cache_set_count(lua_State *L, int cache, const char *name, lua_Integer n)
{
    lua_pushinteger(L, n);
    lua_setfield(L, cache, name);
}

/* cache[tab][key] = value for the key and value on top of the stack (both
 * popped); when tab is full, one other entry makes room. */
static void cache_put(lua_State *L, int cache, const char *tab, const char *count, lua_Integer max)
{
    lua_Integer n;
    int had;
    lua_getfield(L, cache, tab);      /* key value tab */
    lua_pushvalue(L, -3);
    lua_rawget(L, -2);
    had = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!had) {
        n = cache_count(L, cache, count);
        if (n >= max) {
            lua_pushnil(L);
            if (lua_next(L, -2)) {    /* key value tab k v */
                lua_pop(L, 1);
                lua_pushnil(L);
                lua_rawset(L, -3);
                n--;
            }
        }
        cache_set_count(L, cache, count, n + 1);
    }
    lua_insert(L, -3);                /* tab key value */
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Drops cache[tab][key] for the key on top of the stack (popped). */
static void cache_drop(lua_State *L, int cache, const char *tab, const char *count)
{
    lua_getfield(L, cache, tab);      /* key tab */
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, -3);
        cache_set_count(L, cache, count, cache_count(L, cache, count) - 1);
    } else {
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
}

static void cache_bump(lua_State *L, int cache, const char *name)
{
    cache_set_count(L, cache, name, cache_count(L, cache, name) + 1);
}

/* Keeps the session the server just handed this connection, if any. */
static void keep_tls_session(lua_State *L, lsmtp_socket *u)
{
    lsmtp_tls_session *su;
    int cache;
    if (u->tls == NULL || u->sess_key == NULL || !smtp_tls_has_session(u->tls))
        return;
    cache = push_tls_cache(L);
    lua_pushlstring(L, u->sess_key, u->sess_key_len);
    su = lua_newuserdata(L, sizeof *su);
    su->s = NULL;
    lsmtp_setclass(L, TLS_SESSION_MT);
    su->s = smtp_tls_take_session(u->tls);
    if (su->s == NULL) {
        lua_pop(L, 3);
        return;
    }
    cache_put(L, cache, "sess", "nsess", TLS_SESSION_MAX);
    lua_pop(L, 1);
}

static void forget_sess_key(lsmtp_socket *u)
{
    free(u->sess_key);
    u->sess_key = NULL;
    u->sess_key_len = 0;
}

/* A TLS connection that failed (other than by a timeout) gives up its
 * server's session: the next connection starts afresh. */
static void drop_tls_session(lua_State *L, lsmtp_socket *u, int rc)
{
    int cache;
    if (u->tls == NULL || u->sess_key == NULL || rc == SMTP_E_TIMEOUT)
        return;
    cache = push_tls_cache(L);
    lua_pushlstring(L, u->sess_key, u->sess_key_len);
    cache_drop(L, cache, "sess", "nsess");
    lua_pop(L, 1);
    forget_sess_key(u);
}

/* core.tls_cache() -> { contexts =, sessions =, built =, handshakes =,
 * resumed = }: what the TLS cache of this Lua state holds and has done. */
static int l_tls_cache(lua_State *L)
{
    int cache = push_tls_cache(L);
    lua_newtable(L);
    lua_pushinteger(L, cache_count(L, cache, "nctx"));
    lua_setfield(L, -2, "contexts");
    lua_pushinteger(L, cache_count(L, cache, "nsess"));
    lua_setfield(L, -2, "sessions");
    lua_pushinteger(L, cache_count(L, cache, "built"));
    lua_setfield(L, -2, "built");
    lua_pushinteger(L, cache_count(L, cache, "handshakes"));
    lua_setfield(L, -2, "handshakes");
    lua_pushinteger(L, cache_count(L, cache, "resumed"));
    lua_setfield(L, -2, "resumed");
    return 1;
}

/* core.tls_cache_clear([contexts]): forgets every kept session, and with
 * contexts = true every context too (the next connection builds afresh).
 * The objects go with the garbage collector. */
static int l_tls_cache_clear(lua_State *L)
{
    int cache = push_tls_cache(L);
    lua_newtable(L);
    lua_setfield(L, cache, "sess");
    cache_set_count(L, cache, "nsess", 0);
    if (lua_toboolean(L, 1)) {
        lua_newtable(L);
        lua_setfield(L, cache, "ctx");
        cache_set_count(L, cache, "nctx", 0);
    }
    return 0;
}

static int l_socket_new(lua_State *L)
{
    lsmtp_socket *u = lua_newuserdata(L, sizeof *u);
    smtp_net_init(&u->net);
    u->tls = NULL;
    u->sess_key = NULL;
    u->sess_key_len = 0;
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
    if (n < 0) {
        drop_tls_session(L, u, (int)n);
        return push_net_error(L, u, (int)n);
    }
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
        if (n < 0) {
            drop_tls_session(L, u, (int)n);
            return push_net_error(L, u, (int)n);
        }
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
    if (n < 0) {
        drop_tls_session(L, u, (int)n);
        return push_net_error(L, u, (int)n);
    }
    if (u->sess_key != NULL)
        keep_tls_session(L, u); /* a TLS 1.3 ticket comes with the data */
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int l_socket_close(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    smtp_tls_free(u->tls);
    u->tls = NULL;
    forget_sess_key(u);
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

/* lua_pushfstring piece for an optional string: "<len>:<s>", "-" for none. */
static void key_part(lua_State *L, const char *v)
{
    /* lua_pushliteral is void in Lua 5.1 and LuaJIT: nothing returned. */
    if (v == NULL)
        lua_pushliteral(L, "-");
    else
        lua_pushfstring(L, "%d:%s", (int)strlen(v), v);
}

/* Pushes the cache key of the context that o asks for. */
static void push_ctx_key(lua_State *L, const smtp_tls_opts *o)
{
    char stamp[640];
    int top = lua_gettop(L);
    smtp_tls_opts_stamp(o, stamp, sizeof stamp);
    lua_pushfstring(L, "tls1.2+ verify=%d ", o->verify);
    key_part(L, o->verify ? o->cafile : NULL);
    key_part(L, o->verify ? o->capath : NULL);
    key_part(L, o->cert);
    key_part(L, o->key);
    lua_pushstring(L, stamp);
    lua_concat(L, lua_gettop(L) - top);
}

/* sock:starttls{ servername=, verify=, cafile=, capath=, cert=, key= }
 * -> true | nil, code, msg. Verification is on unless verify == false.
 * The context comes from the TLS cache (built on first use), and a session
 * kept from an earlier connection to the same server is offered. */
static int l_socket_starttls(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    smtp_tls_opts o;
    lsmtp_tls_ctx *cu;
    lsmtp_tls_session *su;
    const char *skey;
    size_t skey_len;
    int rc, cache, ckey;
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
    lua_settop(L, 2);
    cache = push_tls_cache(L);
    push_ctx_key(L, &o);
    ckey = lua_gettop(L);
    lua_getfield(L, cache, "ctx");
    lua_pushvalue(L, ckey);
    lua_rawget(L, -2);
    cu = lua_isuserdata(L, -1) ? lsmtp_checkudata(L, -1, TLS_CTX_MT) : NULL;
    if (cu == NULL || cu->c == NULL) {
        lua_pop(L, 1);
        /* Refused before any OpenSSL work: nothing to load for a lost cause. */
        if (o.verify && (o.servername == NULL || o.servername[0] == '\0')) {
            snprintf(u->net.errmsg, sizeof u->net.errmsg, "no server name to verify");
            return push_net_error(L, u, SMTP_E_TLS);
        }
        cu = lua_newuserdata(L, sizeof *cu);
        cu->c = NULL;
        lsmtp_setclass(L, TLS_CTX_MT);
        rc = smtp_tls_ctx_new(&cu->c, &u->net, &o);
        if (rc)
            return push_net_error(L, u, rc == SMTP_E_ARGUMENT ? SMTP_E_TLS : rc);
        lua_pushvalue(L, ckey);
        lua_pushvalue(L, -2);
        cache_put(L, cache, "ctx", "nctx", TLS_CTX_MAX);
        cache_bump(L, cache, "built");
    }
    /* cu stays on the stack: an eviction cannot free it under us */
    lua_pushvalue(L, ckey);
    lua_pushfstring(L, " peer=%s ", u->net.peer);
    key_part(L, o.servername);
    lua_concat(L, 3);
    skey = lua_tolstring(L, -1, &skey_len);
    lua_getfield(L, cache, "sess");
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);
    su = lua_isuserdata(L, -1) ? lsmtp_checkudata(L, -1, TLS_SESSION_MT) : NULL;
    if (su != NULL && !smtp_tls_session_resumable(su->s)) {
        lua_pushlstring(L, skey, skey_len);
        cache_drop(L, cache, "sess", "nsess");
        su = NULL;
    }
    forget_sess_key(u);
    u->sess_key = malloc(skey_len);
    if (u->sess_key == NULL)
        return luaL_error(L, "not enough memory");
    memcpy(u->sess_key, skey, skey_len);
    u->sess_key_len = skey_len;
    rc = smtp_tls_start_ctx(&u->tls, &u->net, cu->c, o.servername, su ? su->s : NULL,
                            op_deadline(u));
    if (rc) {
        forget_sess_key(u);
        if (su != NULL) { /* whatever went wrong, not with that session again */
            lua_pushlstring(L, skey, skey_len);
            cache_drop(L, cache, "sess", "nsess");
        }
        return push_net_error(L, u, rc == SMTP_E_ARGUMENT ? SMTP_E_TLS : rc);
    }
    cache_bump(L, cache, "handshakes");
    if (smtp_tls_reused(u->tls))
        cache_bump(L, cache, "resumed");
    keep_tls_session(L, u); /* TLS 1.2 hands it over with the handshake */
    lua_pushboolean(L, 1);
    return 1;
}

/* sock:tls_info() -> version, cipher, resumed | nil */
static int l_socket_tls_info(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    if (!u->tls)
        return 0;
    lua_pushstring(L, smtp_tls_version(u->tls));
    lua_pushstring(L, smtp_tls_cipher(u->tls));
    lua_pushboolean(L, smtp_tls_reused(u->tls));
    return 3;
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
    {"tls_cache", l_tls_cache},
    {"tls_cache_clear", l_tls_cache_clear},
    {NULL, NULL},
};

/* Registers the classes and the core functions of this part into the
 * table on top of the stack. */
void lsmtp_open_net(lua_State *L)
{
    lsmtp_newclass(L, SOCKET_MT, socket_methods);
    lsmtp_newclass(L, TLS_CTX_MT, tls_ctx_methods);
    lsmtp_newclass(L, TLS_SESSION_MT, tls_session_methods);
    lsmtp_setfuncs(L, net_functions);
}
