/* smtp.core: DKIM (smtp_dkim). One part of the binding behind
 * luaopen_smtp_core (csrc/lsmtp.c), whose conventions it follows. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsmtp.h"
#include "smtp_dkim.h"
#include "smtp_frame.h"

/* ---- DKIM ------------------------------------------------------------------
 * core.dkim_body(relaxed, max_header) -> hasher
 *   hasher:update(s) -> true | nil, code, msg
 *   hasher:finish() -> header_section, body_hash (32 raw octets) | nil, code, msg
 * core.dkim_key(alg, pem) -> key | nil, "argument", msg; key:sign(data) -> raw
 *   signature. alg: "rsa-sha256" or "ed25519-sha256". */
typedef struct lsmtp_dkim {
    smtp_dkim_body *body;
} lsmtp_dkim;

static int l_dkim_body_new(lua_State *L)
{
    int relaxed = lua_toboolean(L, 1);
    lua_Integer max_header = luaL_checkinteger(L, 2);
    lsmtp_dkim *u;
    int rc;
    luaL_argcheck(L, max_header > 0, 2, "header limit must be positive");
    u = lua_newuserdata(L, sizeof *u);
    u->body = NULL;
    lsmtp_setclass(L, DKIM_MT);
    rc = smtp_dkim_body_new(&u->body, relaxed, (size_t)max_header);
    if (rc)
        return luaL_error(L, "smtp.core: %s", smtp_strerror(rc));
    return 1;
}

static lsmtp_dkim *check_dkim(lua_State *L)
{
    lsmtp_dkim *u = lsmtp_checkudata(L, 1, DKIM_MT);
    if (!u->body)
        luaL_error(L, "smtp.core: DKIM hasher used after free");
    return u;
}

static int l_dkim_update(lua_State *L)
{
    lsmtp_dkim *u = check_dkim(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int rc = smtp_dkim_body_update(u->body, s, len);
    return push_result(L, rc, rc == SMTP_E_LIMIT ? "the header section is too long to sign" : NULL);
}

static int l_dkim_finish(lua_State *L)
{
    lsmtp_dkim *u = check_dkim(L);
    unsigned char hash[SMTP_DKIM_HASH_LEN];
    const char *header;
    size_t header_len;
    int rc = smtp_dkim_body_finish(u->body, &header, &header_len, hash);
    if (rc)
        return push_result(L, rc, NULL);
    lua_pushlstring(L, header, header_len);
    lua_pushlstring(L, (const char *)hash, sizeof hash);
    return 2;
}

static int l_dkim_gc(lua_State *L)
{
    lsmtp_dkim *u = lsmtp_checkudata(L, 1, DKIM_MT);
    smtp_dkim_body_free(u->body);
    u->body = NULL;
    return 0;
}

static const luaL_Reg dkim_methods[] = {
    {"update", l_dkim_update},
    {"finish", l_dkim_finish},
    {"__gc", l_dkim_gc},
    {NULL, NULL},
};

/* core.dkim_key(alg, pem) -> key | nil, "argument", msg */
typedef struct lsmtp_dkim_key {
    smtp_dkim_key *key;
} lsmtp_dkim_key;

static int l_dkim_key_new(lua_State *L)
{
    static const char *const algs[] = {"rsa-sha256", "ed25519-sha256", NULL};
    int alg = luaL_checkoption(L, 1, NULL, algs);
    size_t pem_len;
    const char *pem = luaL_checklstring(L, 2, &pem_len);
    const char *msg = NULL;
    lsmtp_dkim_key *u = lua_newuserdata(L, sizeof *u);
    int rc;
    u->key = NULL;
    lsmtp_setclass(L, DKIM_KEY_MT);
    rc = smtp_dkim_key_new(&u->key, alg == 0 ? SMTP_DKIM_RSA_SHA256 : SMTP_DKIM_ED25519_SHA256, pem, pem_len,
                           &msg);
    if (rc == SMTP_E_NOMEM)
        return luaL_error(L, "not enough memory");
    if (rc) {
        lua_pushnil(L);
        lua_pushstring(L, code_name(rc));
        lua_pushstring(L, msg ? msg : smtp_strerror(rc));
        return 3;
    }
    return 1;
}

static int l_dkim_key_gc(lua_State *L)
{
    lsmtp_dkim_key *u = lsmtp_checkudata(L, 1, DKIM_KEY_MT);
    smtp_dkim_key_free(u->key);
    u->key = NULL;
    return 0;
}

/* key:sign(data) -> raw signature */
static int l_dkim_key_sign(lua_State *L)
{
    lsmtp_dkim_key *u = lsmtp_checkudata(L, 1, DKIM_KEY_MT);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    smtp_buf *b;
    int rc;
    if (!u->key)
        return luaL_error(L, "smtp.core: DKIM key used after free");
    b = new_scratch(L);
    rc = smtp_dkim_sign(u->key, data, len, b);
    if (rc == SMTP_E_NOMEM)
        return luaL_error(L, "not enough memory");
    if (rc)
        return luaL_error(L, "smtp.core: DKIM signing failed (%s)", smtp_strerror(rc));
    lua_pushlstring(L, smtp_buf_ptr(b), smtp_buf_len(b));
    smtp_buf_free(b);
    return 1;
}

static const luaL_Reg dkim_key_methods[] = {
    {"sign", l_dkim_key_sign},
    {"__gc", l_dkim_key_gc},
    {NULL, NULL},
};

static const luaL_Reg dkim_functions[] = {
    {"dkim_body", l_dkim_body_new},
    {"dkim_key", l_dkim_key_new},
    {NULL, NULL},
};

/* Registers the classes and the core functions of this part into the
 * table on top of the stack. */
void lsmtp_open_dkim(lua_State *L)
{
    lsmtp_newclass(L, DKIM_MT, dkim_methods);
    lsmtp_newclass(L, DKIM_KEY_MT, dkim_key_methods);
    lsmtp_setfuncs(L, dkim_functions);
}
