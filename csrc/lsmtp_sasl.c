/* smtp.core: SASL (smtp_sasl). One part of the binding behind
 * luaopen_smtp_core (csrc/lsmtp.c), whose conventions it follows. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsmtp.h"
#include "smtp_sasl.h"

/* ---- SASL --------------------------------------------------------------- */

typedef struct lsmtp_sasl {
    smtp_sasl *s;
    smtp_buf out;   /* responses hold secrets: wiped before reuse and at __gc */
} lsmtp_sasl;

static void wipe_buf(smtp_buf *b)
{
    if (b->data)
        memset(b->data, 0, b->cap);
    smtp_buf_clear(b);
}

static int l_sasl_gc(lua_State *L)
{
    lsmtp_sasl *u = lsmtp_checkudata(L, 1, SASL_MT);
    smtp_sasl_free(u->s);
    u->s = NULL;
    wipe_buf(&u->out);
    smtp_buf_free(&u->out);
    return 0;
}

static int sasl_error(lua_State *L, int rc, const char *what)
{
    lua_pushnil(L);
    lua_pushstring(L, rc == SMTP_E_ARGUMENT ? "argument" : "protocol");
    lua_pushfstring(L, "%s: %s", what, smtp_strerror(rc));
    return 3;
}

/* core.sasl(mech, authzid, user, secret) -> exchange, initial_b64 | nil, code, msg */
static int l_sasl_new(lua_State *L)
{
    int bad[4], i, rc;
    const char *mech = check_cstring(L, 1, &bad[0]);
    const char *authzid = opt_cstring(L, 2, &bad[1]);
    const char *user = check_cstring(L, 3, &bad[2]);
    const char *secret = check_cstring(L, 4, &bad[3]);
    lsmtp_sasl *u;
    for (i = 0; i < 4; i++) {
        if (bad[i])
            return sasl_error(L, SMTP_E_ARGUMENT, "credentials contain a NUL byte");
    }
    u = lua_newuserdata(L, sizeof *u);
    u->s = NULL;
    smtp_buf_init(&u->out, 65536);
    lsmtp_setclass(L, SASL_MT);
    rc = smtp_sasl_start(&u->s, mech, authzid, user, secret, &u->out);
    if (rc)
        return sasl_error(L, rc, "cannot start SASL");
    lua_pushlstring(L, smtp_buf_ptr(&u->out), smtp_buf_len(&u->out));
    wipe_buf(&u->out);
    return 2;
}

static lsmtp_sasl *check_sasl(lua_State *L)
{
    lsmtp_sasl *u = lsmtp_checkudata(L, 1, SASL_MT);
    if (!u->s)
        luaL_error(L, "smtp.core: SASL exchange used after free");
    return u;
}

/* x:step(challenge_text) -> response_b64 | nil, code, msg */
static int l_sasl_step(lua_State *L)
{
    lsmtp_sasl *u = check_sasl(L);
    size_t len;
    const char *c = luaL_checklstring(L, 2, &len);
    int rc = smtp_sasl_step(u->s, c, len, &u->out);
    if (rc)
        return sasl_error(L, rc, "bad challenge from the server");
    lua_pushlstring(L, smtp_buf_ptr(&u->out), smtp_buf_len(&u->out));
    wipe_buf(&u->out);
    return 1;
}

/* x:finish(text_of_235) -> true | nil, "protocol", msg */
static int l_sasl_finish(lua_State *L)
{
    lsmtp_sasl *u = check_sasl(L);
    size_t len;
    const char *t = luaL_optlstring(L, 2, "", &len);
    int rc = smtp_sasl_finish(u->s, t, len);
    if (rc) {
        lua_pushnil(L);
        lua_pushstring(L, "protocol");
        lua_pushstring(L, "the server did not prove that it knows the password"
                          " (SCRAM server signature missing or wrong)");
        return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg sasl_methods[] = {
    {"step", l_sasl_step},
    {"finish", l_sasl_finish},
    {"__gc", l_sasl_gc},
    {NULL, NULL},
};

/* core.sasl_choose(server_mechs, have_token) -> name | nil */
static int l_sasl_choose(lua_State *L)
{
    const char *m = smtp_sasl_choose(luaL_optstring(L, 1, ""), lua_toboolean(L, 2));
    if (m)
        lua_pushstring(L, m);
    else
        lua_pushnil(L);
    return 1;
}

static const luaL_Reg sasl_functions[] = {
    {"sasl", l_sasl_new},
    {"sasl_choose", l_sasl_choose},
    {NULL, NULL},
};

/* Registers the classes and the core functions of this part into the
 * table on top of the stack. */
void lsmtp_open_sasl(lua_State *L)
{
    lsmtp_newclass(L, SASL_MT, sasl_methods);
    lsmtp_setfuncs(L, sasl_functions);
}
