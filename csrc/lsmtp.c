/* smtp.core: the Lua binding of the engine, the framer, the codecs and the
 * blocking transport. The only file that includes Lua headers.
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

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsmtp_compat.h"
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

#define ENGINE_MT "smtp.core.engine"
#define SOCKET_MT "smtp.core.socket"
#define FRAMER_MT "smtp.core.framer"
#define SCRATCH_MT "smtp.core.scratch"
#define ENCODER_MT "smtp.core.encoder"
#define SASL_MT "smtp.core.sasl"
#define DKIM_MT "smtp.core.dkim"
#define DKIM_KEY_MT "smtp.core.dkim_key"
#define TLS_CTX_MT "smtp.core.tls_ctx"
#define TLS_SESSION_MT "smtp.core.tls_session"

#define RECV_SIZE 16384

static const char *code_name(int rc)
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
static int push_result(lua_State *L, int rc, const char *msg)
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
static const char *check_cstring(lua_State *L, int idx, int *bad)
{
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    *bad = strlen(s) != len;
    return s;
}

static const char *opt_cstring(lua_State *L, int idx, int *bad)
{
    if (lua_isnoneornil(L, idx)) {
        *bad = 0;
        return "";
    }
    return check_cstring(L, idx, bad);
}

/* ---- engine ------------------------------------------------------------- */

typedef struct lsmtp_engine {
    smtp_engine e;
    int live;
} lsmtp_engine;

static smtp_engine *check_engine(lua_State *L)
{
    lsmtp_engine *u = lsmtp_checkudata(L, 1, ENGINE_MT);
    if (!u->live)
        luaL_error(L, "smtp.core: engine used after free");
    return &u->e;
}

static size_t opt_size_field(lua_State *L, int t, const char *name, size_t def)
{
    lua_Number v;
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return def;
    }
    v = luaL_checknumber(L, -1);
    lua_pop(L, 1);
    if (v < 1 || v > 1e12)
        luaL_error(L, "smtp.core: limit '%s' out of range", name);
    return (size_t)v;
}

static int l_engine_new(lua_State *L)
{
    smtp_limits lim;
    lsmtp_engine *u;
    int rc;

    smtp_limits_default(&lim);
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lim.max_line = opt_size_field(L, 1, "max_line", lim.max_line);
        lim.max_lines = opt_size_field(L, 1, "max_lines", lim.max_lines);
        lim.max_output = opt_size_field(L, 1, "max_output", lim.max_output);
        lim.max_commands = (int)opt_size_field(L, 1, "max_commands", (size_t)lim.max_commands);
    }
    u = lua_newuserdata(L, sizeof *u);
    u->live = 0;
    rc = smtp_engine_init(&u->e, &lim);
    if (rc) {
        smtp_engine_free(&u->e);
        return luaL_error(L, "smtp.core: invalid engine limits");
    }
    u->live = 1;
    lsmtp_setclass(L, ENGINE_MT);
    return 1;
}

static int l_engine_gc(lua_State *L)
{
    lsmtp_engine *u = lsmtp_checkudata(L, 1, ENGINE_MT);
    if (u->live) {
        u->live = 0;
        smtp_engine_free(&u->e);
    }
    return 0;
}

static int l_engine_feed(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    return push_result(L, smtp_engine_feed(e, s, len), "reply data exceeds the input limit");
}

static int l_engine_output(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    size_t len;
    const char *p = smtp_engine_output(e, &len);
    lua_pushlstring(L, p, len);
    return 1;
}

static int l_engine_pending(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    size_t len;
    smtp_engine_output(e, &len);
    lua_pushinteger(L, (lua_Integer)len);
    return 1;
}

static int l_engine_consumed(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0, 2, "negative count");
    smtp_engine_consumed(e, (size_t)n);
    return 0;
}

static const char *event_name(smtp_event_kind k)
{
    switch (k) {
    case SMTP_EV_NEED_INPUT: return "need_input";
    case SMTP_EV_REPLY: return "reply";
    case SMTP_EV_NEED_BODY: return "need_body";
    case SMTP_EV_STARTTLS: return "starttls";
    case SMTP_EV_CHALLENGE: return "challenge";
    case SMTP_EV_DONE: return "done";
    case SMTP_EV_FAILED: return "failed";
    default: return "idle";
    }
}

static const char *fail_name(smtp_fail f)
{
    switch (f) {
    case SMTP_FAIL_GREETING: return "greeting";
    case SMTP_FAIL_HELLO: return "hello";
    case SMTP_FAIL_TLS: return "tls";
    case SMTP_FAIL_AUTH: return "auth";
    case SMTP_FAIL_SENDER: return "sender";
    case SMTP_FAIL_RECIPIENTS: return "recipients";
    case SMTP_FAIL_DATA: return "data";
    case SMTP_FAIL_COMMAND: return "command";
    case SMTP_FAIL_CLOSING: return "closing";
    case SMTP_FAIL_PROTOCOL: return "protocol";
    default: return NULL;
    }
}

/* kind, cmd, index, code, enhanced, text, fail, error, txn: flat values, so
 * the driver loop allocates no table per event. index: the recipient (from
 * 1) for RCPT, the reply's position (from 1) for an LMTP end of data. */
static int l_engine_next(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    smtp_event ev;
    const char *fail;

    smtp_engine_next(e, &ev);
    lua_pushstring(L, event_name(ev.kind));
    if (ev.kind == SMTP_EV_NEED_INPUT || ev.kind == SMTP_EV_NEED_BODY || ev.kind == SMTP_EV_IDLE)
        return 1;
    lua_pushstring(L, smtp_cmd_name(ev.cmd));
    if (ev.kind == SMTP_EV_REPLY && ev.index >= 0 &&
        (ev.cmd == SMTP_CMD_RCPT || ev.cmd == SMTP_CMD_DOT || ev.cmd == SMTP_CMD_BDAT))
        lua_pushinteger(L, ev.index + 1);
    else
        lua_pushnil(L);
    if (ev.reply.code) {
        lua_pushinteger(L, ev.reply.code);
        if (ev.reply.enhanced[0])
            lua_pushstring(L, ev.reply.enhanced);
        else
            lua_pushnil(L);
        lua_pushlstring(L, ev.reply.text, ev.reply.text_len);
    } else {
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushnil(L);
    }
    fail = fail_name(ev.fail);
    if (fail)
        lua_pushstring(L, fail);
    else
        lua_pushnil(L);
    if (ev.error)
        lua_pushstring(L, smtp_strerror(ev.error));
    else
        lua_pushnil(L);
    if (ev.txn)
        lua_pushinteger(L, (lua_Integer)ev.txn);
    else
        lua_pushnil(L);
    return 9;
}

static int l_engine_hello(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    int bad;
    const char *name = check_cstring(L, 2, &bad);
    int lmtp = lua_toboolean(L, 3);
    if (bad)
        return push_result(L, SMTP_E_ARGUMENT, "host name contains a NUL byte");
    return push_result(L, smtp_engine_hello(e, name, lmtp),
                       "invalid host name for EHLO (control characters or spaces)");
}

static int l_engine_starttls(lua_State *L)
{
    return push_result(L, smtp_engine_starttls(check_engine(L)), NULL);
}

static int l_engine_tls_done(lua_State *L)
{
    return push_result(L, smtp_engine_tls_done(check_engine(L)), NULL);
}

/* eng:restore(ehlo_text, lmtp, secure): a pooled connection's session */
static int l_engine_restore(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    size_t len;
    const char *t = luaL_checklstring(L, 2, &len);
    return push_result(L, smtp_engine_restore(e, t, len, lua_toboolean(L, 3), lua_toboolean(L, 4)),
                       "EHLO text too long");
}

static int l_engine_set_secure(lua_State *L)
{
    smtp_engine_set_secure(check_engine(L), lua_toboolean(L, 2));
    return 0;
}

static int l_engine_set_insecure_auth(lua_State *L)
{
    smtp_engine_set_insecure_auth(check_engine(L), lua_toboolean(L, 2));
    return 0;
}

/* eng:auth(mech, initial_b64_or_nil) */
static int l_engine_auth(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    int bad1, bad2;
    const char *mech = check_cstring(L, 2, &bad1);
    const char *initial = opt_cstring(L, 3, &bad2);
    if (bad1 || bad2)
        return push_result(L, SMTP_E_ARGUMENT, "AUTH argument contains a NUL byte");
    return push_result(L, smtp_engine_auth(e, mech, initial), "invalid AUTH mechanism or response");
}

static int l_engine_auth_response(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    int bad;
    const char *resp = check_cstring(L, 2, &bad);
    if (bad)
        return push_result(L, SMTP_E_ARGUMENT, "AUTH response contains a NUL byte");
    return push_result(L, smtp_engine_auth_response(e, resp), "invalid AUTH response");
}

static int l_engine_mail(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    int bad1, bad2;
    const char *from = check_cstring(L, 2, &bad1);
    lua_Number size = luaL_optnumber(L, 3, 0);
    const char *params = opt_cstring(L, 4, &bad2);
    int rc;
    luaL_argcheck(L, size >= 0, 3, "negative size");
    if (bad1 || bad2)
        return push_result(L, SMTP_E_ARGUMENT, "sender contains a NUL byte");
    rc = smtp_engine_mail(e, from, (unsigned long long)size, params);
    if (rc == 0) {
        /* The transaction's id: DONE/FAILED and its replies carry it. */
        lua_pushboolean(L, 1);
        lua_pushinteger(L, (lua_Integer)e->txn_next_id);
        return 2;
    }
    if (rc == SMTP_E_SIZE) {
        lua_pushnil(L);
        lua_pushstring(L, "size");
        lua_pushfstring(L, "message of %f octets exceeds the server's limit of %f",
                        (double)size, (double)smtp_engine_max_size(e));
        return 3;
    }
    return push_result(L, rc, "invalid sender address (control characters or angle brackets)");
}

static int l_engine_rcpt(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    int bad1, bad2;
    const char *to = check_cstring(L, 2, &bad1);
    const char *params = opt_cstring(L, 3, &bad2);
    if (bad1 || bad2)
        return push_result(L, SMTP_E_ARGUMENT, "recipient contains a NUL byte");
    return push_result(L, smtp_engine_rcpt(e, to, params),
                       "invalid recipient address (empty, control characters or angle brackets)");
}

static int l_engine_data(lua_State *L)
{
    return push_result(L, smtp_engine_data(check_engine(L)), NULL);
}

static int l_engine_body(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int rc = smtp_engine_body(e, s, len);
    if (rc == SMTP_E_LINE) {
        lua_pushnil(L);
        lua_pushstring(L, "line");
        lua_pushfstring(L, "message line %d is longer than 998 octets",
                        (int)e->frame.error_line);
        return 3;
    }
    return push_result(L, rc, "output buffer full: write smaller chunks");
}

/* eng:bdat(chunk, last) */
static int l_engine_bdat(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int rc = smtp_engine_bdat(e, s, len, lua_toboolean(L, 3));
    if (rc == 0) {
        /* The chunk's size after framing: what the BDAT command says (0
         * when nothing was staged for a non-last piece). */
        lua_pushboolean(L, 1);
        lua_pushinteger(L, (lua_Integer)smtp_buf_len(&e->scratch));
        return 2;
    }
    if (rc == SMTP_E_LINE) {
        lua_pushnil(L);
        lua_pushstring(L, "line");
        lua_pushfstring(L, "message line %d is longer than 998 octets", (int)e->frame.error_line);
        return 3;
    }
    return push_result(L, rc, "output buffer full: write smaller chunks");
}

static int l_engine_transactions(lua_State *L)
{
    lua_pushinteger(L, smtp_engine_transactions(check_engine(L)));
    return 1;
}

static int l_engine_can_chain(lua_State *L)
{
    lua_pushboolean(L, smtp_engine_can_chain(check_engine(L)));
    return 1;
}

static int l_engine_staged(lua_State *L)
{
    lua_pushinteger(L, smtp_engine_staged(check_engine(L)));
    return 1;
}

/* Octets ever put into the output, and octets the transport took: a
 * transaction's end of data is written once sent() reaches the written()
 * it had just after its end was queued. */
static int l_engine_written(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)check_engine(L)->written);
    return 1;
}

static int l_engine_sent(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)check_engine(L)->sent);
    return 1;
}

static int l_engine_body_end(lua_State *L)
{
    return push_result(L, smtp_engine_body_end(check_engine(L)), NULL);
}

static int l_engine_rset(lua_State *L)
{
    return push_result(L, smtp_engine_rset(check_engine(L)), NULL);
}

static int l_engine_noop(lua_State *L)
{
    return push_result(L, smtp_engine_noop(check_engine(L)), NULL);
}

static int l_engine_quit(lua_State *L)
{
    return push_result(L, smtp_engine_quit(check_engine(L)), NULL);
}

static int l_engine_close(lua_State *L)
{
    smtp_engine_close(check_engine(L));
    return 0;
}

static int l_engine_dead(lua_State *L)
{
    lua_pushboolean(L, smtp_engine_dead(check_engine(L)));
    return 1;
}

static int l_engine_waiting_for(lua_State *L)
{
    lua_pushstring(L, smtp_cmd_name(smtp_engine_waiting_for(check_engine(L))));
    return 1;
}

static int l_engine_max_size(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)smtp_engine_max_size(check_engine(L)));
    return 1;
}

static int l_engine_set_pipelining(lua_State *L)
{
    smtp_engine_set_pipelining(check_engine(L), lua_toboolean(L, 2));
    return 0;
}

/* { KEYWORD = "params" or true }, keywords upper-cased; nil after HELO. */
static int l_engine_capabilities(lua_State *L)
{
    smtp_engine *e = check_engine(L);
    const char *kw, *params;
    size_t kwlen, plen, j;
    int i;
    char upper[64];

    if (!smtp_engine_extended(e)) {
        lua_pushnil(L);
        return 1;
    }
    lua_newtable(L);
    for (i = 0; smtp_engine_cap(e, i, &kw, &kwlen, &params, &plen); i++) {
        if (kwlen == 0 || kwlen >= sizeof upper)
            continue;
        for (j = 0; j < kwlen; j++)
            upper[j] = (kw[j] >= 'a' && kw[j] <= 'z') ? (char)(kw[j] - 32) : kw[j];
        if (kwlen > 5 && memcmp(upper, "AUTH=", 5) == 0) {
            /* The pre-RFC 4954 form "AUTH=PLAIN LOGIN" that some servers
             * still send: the same list as "AUTH PLAIN LOGIN". A proper
             * AUTH line, when there is one too, wins. */
            lua_getfield(L, -1, "AUTH");
            if (lua_isnil(L, -1)) {
                lua_pushlstring(L, kw + 5, kwlen - 5);
                if (plen) {
                    lua_pushliteral(L, " ");
                    lua_pushlstring(L, params, plen);
                    lua_concat(L, 3);
                }
                lua_setfield(L, -3, "AUTH");
            }
            lua_pop(L, 1);
            continue;
        }
        lua_pushlstring(L, upper, kwlen);
        if (plen)
            lua_pushlstring(L, params, plen);
        else
            lua_pushboolean(L, 1);
        lua_rawset(L, -3);
    }
    return 1;
}

static const luaL_Reg engine_methods[] = {
    {"feed", l_engine_feed},
    {"output", l_engine_output},
    {"pending", l_engine_pending},
    {"consumed", l_engine_consumed},
    {"next", l_engine_next},
    {"hello", l_engine_hello},
    {"starttls", l_engine_starttls},
    {"tls_done", l_engine_tls_done},
    {"set_secure", l_engine_set_secure},
    {"restore", l_engine_restore},
    {"set_insecure_auth", l_engine_set_insecure_auth},
    {"auth", l_engine_auth},
    {"auth_response", l_engine_auth_response},
    {"mail", l_engine_mail},
    {"rcpt", l_engine_rcpt},
    {"data", l_engine_data},
    {"body", l_engine_body},
    {"body_end", l_engine_body_end},
    {"bdat", l_engine_bdat},
    {"transactions", l_engine_transactions},
    {"can_chain", l_engine_can_chain},
    {"staged", l_engine_staged},
    {"written", l_engine_written},
    {"sent", l_engine_sent},
    {"rset", l_engine_rset},
    {"noop", l_engine_noop},
    {"quit", l_engine_quit},
    {"close", l_engine_close},
    {"dead", l_engine_dead},
    {"waiting_for", l_engine_waiting_for},
    {"max_size", l_engine_max_size},
    {"set_pipelining", l_engine_set_pipelining},
    {"capabilities", l_engine_capabilities},
    {"__gc", l_engine_gc},
    {NULL, NULL},
};

/* ---- framer and line checker -------------------------------------------- */

typedef struct lsmtp_framer {
    smtp_frame f;
    smtp_buf out;
    int live;
} lsmtp_framer;

static int l_framer_new(lua_State *L)
{
    lua_Integer max_line = luaL_optinteger(L, 1, SMTP_MAX_LINE);
    lsmtp_framer *u = lua_newuserdata(L, sizeof *u);
    luaL_argcheck(L, max_line >= 0, 1, "negative line limit");
    smtp_frame_init(&u->f, (size_t)max_line);
    smtp_buf_init(&u->out, (size_t)1 << 30);
    u->live = 1;
    lsmtp_setclass(L, FRAMER_MT);
    return 1;
}

static lsmtp_framer *check_framer(lua_State *L)
{
    lsmtp_framer *u = lsmtp_checkudata(L, 1, FRAMER_MT);
    if (!u->live)
        luaL_error(L, "smtp.core: framer used after free");
    return u;
}

static int push_framed(lua_State *L, lsmtp_framer *u, int rc)
{
    if (rc == SMTP_E_LINE) {
        lua_pushnil(L);
        lua_pushstring(L, "line");
        lua_pushfstring(L, "message line %d is longer than %d octets", (int)u->f.error_line,
                        (int)u->f.max_line);
        return 3;
    }
    if (rc)
        return push_result(L, rc, NULL);
    lua_pushlstring(L, smtp_buf_ptr(&u->out), smtp_buf_len(&u->out));
    smtp_buf_clear(&u->out);
    return 1;
}

/* framer:write(s) -> the framed bytes | nil, "line", message */
static int l_framer_write(lua_State *L)
{
    lsmtp_framer *u = check_framer(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    return push_framed(L, u, smtp_frame_write(&u->f, s, len, &u->out));
}

static int l_framer_finish(lua_State *L)
{
    lsmtp_framer *u = check_framer(L);
    return push_framed(L, u, smtp_frame_finish(&u->f, &u->out));
}

/* framer:check(s) -> true | nil, "line", line number (no output) */
static int l_framer_check(lua_State *L)
{
    lsmtp_framer *u = check_framer(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    if (smtp_frame_check(&u->f, s, len) == SMTP_E_LINE) {
        /* The one error shape of smtp.core: nil, code, message. */
        lua_pushnil(L);
        lua_pushstring(L, "line");
        lua_pushfstring(L, "message line %d is longer than %d octets", (int)u->f.error_line,
                        (int)u->f.max_line);
        return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_framer_gc(lua_State *L)
{
    lsmtp_framer *u = lsmtp_checkudata(L, 1, FRAMER_MT);
    if (u->live) {
        u->live = 0;
        smtp_buf_free(&u->out);
    }
    return 0;
}

static const luaL_Reg framer_methods[] = {
    {"write", l_framer_write},
    {"finish", l_framer_finish},
    {"check", l_framer_check},
    {"__gc", l_framer_gc},
    {NULL, NULL},
};

/* ---- codecs ------------------------------------------------------------- */

/* Codec output goes to a scratch buffer owned by a userdata on the stack,
 * so a memory error while making the Lua string leaks nothing. */
static smtp_buf *new_scratch(lua_State *L)
{
    smtp_buf *b = lua_newuserdata(L, sizeof *b);
    smtp_buf_init(b, (size_t)-1 / 2);
    lsmtp_setclass(L, SCRATCH_MT);
    return b;
}

static int l_scratch_gc(lua_State *L)
{
    smtp_buf_free(lsmtp_checkudata(L, 1, SCRATCH_MT));
    return 0;
}

static const luaL_Reg scratch_methods[] = {
    {"__gc", l_scratch_gc},
    {NULL, NULL},
};

static int push_scratch(lua_State *L, smtp_buf *b, int rc)
{
    if (rc == SMTP_E_ARGUMENT) {
        lua_pushnil(L);
        lua_pushstring(L, "argument");
        lua_pushstring(L, "invalid encoded input");
        return 3;
    }
    if (rc)
        return luaL_error(L, "smtp.core: %s", smtp_strerror(rc));
    lua_pushlstring(L, smtp_buf_ptr(b), smtp_buf_len(b));
    smtp_buf_free(b);
    return 1;
}

static int l_b64encode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer line = luaL_optinteger(L, 2, 76);
    smtp_b64 st;
    smtp_buf *b;
    int rc;
    luaL_argcheck(L, line >= 0 && line % 4 == 0, 2, "line length must be a multiple of 4");
    b = new_scratch(L);
    smtp_b64_init(&st, (size_t)line);
    rc = smtp_b64_update(&st, s, len, b);
    if (rc == 0)
        rc = smtp_b64_finish(&st, b);
    return push_scratch(L, b, rc);
}

static int l_b64decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    smtp_buf *b;
    b = new_scratch(L);
    return push_scratch(L, b, smtp_b64_decode(s, len, b));
}

static int l_qpencode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    smtp_qp st;
    smtp_buf *b;
    int rc;
    b = new_scratch(L);
    smtp_qp_init(&st);
    rc = smtp_qp_update(&st, s, len, b);
    if (rc == 0)
        rc = smtp_qp_finish(&st, b);
    return push_scratch(L, b, rc);
}

static int l_qpdecode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    smtp_buf *b;
    b = new_scratch(L);
    return push_scratch(L, b, smtp_qp_decode(s, len, b));
}

static int l_encode_words(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer col = luaL_optinteger(L, 2, 0);
    smtp_buf *b;
    luaL_argcheck(L, col >= 0 && col < 78, 2, "column out of range");
    b = new_scratch(L);
    return push_scratch(L, b, smtp_encode_words(s, len, (size_t)col, b));
}

static int l_header_is_plain(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushboolean(L, smtp_header_is_plain(s, len));
    return 1;
}

/* Streaming encoders: enc:update(s) -> encoded bytes so far, enc:finish()
 * -> the rest. A file is encoded block by block in constant memory. */
typedef struct lsmtp_encoder {
    int kind;          /* 'b' base64, 'q' quoted-printable */
    smtp_b64 b64;
    smtp_qp qp;
    smtp_buf out;
    int live;
} lsmtp_encoder;

static int l_encoder_new(lua_State *L, int kind, size_t line_len)
{
    lsmtp_encoder *u = lua_newuserdata(L, sizeof *u);
    u->kind = kind;
    smtp_b64_init(&u->b64, line_len);
    smtp_qp_init(&u->qp);
    smtp_buf_init(&u->out, (size_t)1 << 30);
    u->live = 1;
    lsmtp_setclass(L, ENCODER_MT);
    return 1;
}

static int l_b64_encoder(lua_State *L)
{
    lua_Integer line = luaL_optinteger(L, 1, 76);
    luaL_argcheck(L, line >= 0 && line % 4 == 0, 1, "line length must be a multiple of 4");
    return l_encoder_new(L, 'b', (size_t)line);
}

static int l_qp_encoder(lua_State *L)
{
    return l_encoder_new(L, 'q', 0);
}

static lsmtp_encoder *check_encoder(lua_State *L)
{
    lsmtp_encoder *u = lsmtp_checkudata(L, 1, ENCODER_MT);
    if (!u->live)
        luaL_error(L, "smtp.core: encoder used after free");
    return u;
}

static int push_encoded(lua_State *L, lsmtp_encoder *u, int rc)
{
    if (rc)
        return luaL_error(L, "smtp.core: %s", smtp_strerror(rc));
    lua_pushlstring(L, smtp_buf_ptr(&u->out), smtp_buf_len(&u->out));
    smtp_buf_clear(&u->out);
    return 1;
}

static int l_encoder_update(lua_State *L)
{
    lsmtp_encoder *u = check_encoder(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int rc = u->kind == 'b' ? smtp_b64_update(&u->b64, s, len, &u->out)
                            : smtp_qp_update(&u->qp, s, len, &u->out);
    return push_encoded(L, u, rc);
}

static int l_encoder_finish(lua_State *L)
{
    lsmtp_encoder *u = check_encoder(L);
    int rc = u->kind == 'b' ? smtp_b64_finish(&u->b64, &u->out) : smtp_qp_finish(&u->qp, &u->out);
    return push_encoded(L, u, rc);
}

static int l_encoder_gc(lua_State *L)
{
    lsmtp_encoder *u = lsmtp_checkudata(L, 1, ENCODER_MT);
    if (u->live) {
        u->live = 0;
        smtp_buf_free(&u->out);
    }
    return 0;
}

static const luaL_Reg encoder_methods[] = {
    {"update", l_encoder_update},
    {"finish", l_encoder_finish},
    {"__gc", l_encoder_gc},
    {NULL, NULL},
};

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
    v = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
    if (!v && !lua_isnil(L, -1))
        luaL_error(L, "smtp.core: TLS option '%s' must be a string", name);
    lua_pop(L, 1); /* the string stays alive: the options table holds it */
    return v;
}

/* lua_pushfstring piece for an optional string: "<len>:<s>", "-" for none. */
static const char *key_part(lua_State *L, const char *v)
{
    if (v == NULL)
        return lua_pushliteral(L, "-");
    return lua_pushfstring(L, "%d:%s", (int)strlen(v), v);
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

static int l_socket_peer(lua_State *L)
{
    lsmtp_socket *u = check_socket(L);
    if (u->net.fd < 0)
        return 0;
    lua_pushstring(L, u->net.peer);
    return 1;
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
    {"peer", l_socket_peer},
    {"__gc", l_socket_close},
    {NULL, NULL},
};

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

/* core.inspect(raw) -> true, eightbit, header_eightbit | nil, "line", n:
 * what a raw message needs, in one C pass instead of Lua patterns. */
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

/* This machine's name, the default for EHLO. */
static int l_hostname(lua_State *L)
{
    char name[256];
    if (gethostname(name, sizeof name) != 0 || name[0] == '\0') {
        lua_pushnil(L);
        return 1;
    }
    name[sizeof name - 1] = '\0';
    lua_pushstring(L, name);
    return 1;
}

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

/* core.idna_to_ascii(domain) -> A-label form | nil, "argument", msg: IDNA2008
 * with the UTS #46 non-transitional mapping (libidn2), for a domain with
 * non-ASCII labels when the server lacks SMTPUTF8. */
static int l_idna_to_ascii(lua_State *L)
{
    size_t len;
    const char *in = luaL_checklstring(L, 1, &len);
    char *out = NULL;
    int rc;
    if (strlen(in) != len) {
        lua_pushnil(L);
        lua_pushliteral(L, "argument");
        lua_pushliteral(L, "a domain with a NUL");
        return 3;
    }
    rc = idn2_to_ascii_8z(in, &out, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
    if (rc != IDN2_OK) {
        if (rc == IDN2_MALLOC)
            return luaL_error(L, "not enough memory");
        lua_pushnil(L);
        lua_pushliteral(L, "argument");
        lua_pushstring(L, idn2_strerror(rc));
        return 3;
    }
    lua_pushstring(L, out);
    idn2_free(out);
    return 1;
}

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

static const luaL_Reg core_functions[] = {
    {"engine", l_engine_new},
    {"framer", l_framer_new},
    {"socket", l_socket_new},
    {"now", l_now},
    {"time", l_time},
    {"valid_address", l_valid_address},
    {"inspect", l_inspect},
    {"hostname", l_hostname},
    {"b64encode", l_b64encode},
    {"b64decode", l_b64decode},
    {"qpencode", l_qpencode},
    {"qpdecode", l_qpdecode},
    {"encode_words", l_encode_words},
    {"header_is_plain", l_header_is_plain},
    {"b64_encoder", l_b64_encoder},
    {"sasl", l_sasl_new},
    {"sasl_choose", l_sasl_choose},
    {"qp_encoder", l_qp_encoder},
    {"dkim_body", l_dkim_body_new},
    {"dkim_key", l_dkim_key_new},
    {"tls_check_name", l_tls_check_name},
    {"tls_cache", l_tls_cache},
    {"tls_cache_clear", l_tls_cache_clear},
    {"idna_to_ascii", l_idna_to_ascii},
    {NULL, NULL},
};

LSMTP_EXPORT int luaopen_smtp_core(lua_State *L)
{
    lsmtp_newclass(L, ENGINE_MT, engine_methods);
    lsmtp_newclass(L, FRAMER_MT, framer_methods);
    lsmtp_newclass(L, SOCKET_MT, socket_methods);
    lsmtp_newclass(L, SCRATCH_MT, scratch_methods);
    lsmtp_newclass(L, ENCODER_MT, encoder_methods);
    lsmtp_newclass(L, SASL_MT, sasl_methods);
    lsmtp_newclass(L, DKIM_MT, dkim_methods);
    lsmtp_newclass(L, DKIM_KEY_MT, dkim_key_methods);
    lsmtp_newclass(L, TLS_CTX_MT, tls_ctx_methods);
    lsmtp_newclass(L, TLS_SESSION_MT, tls_session_methods);
    lua_newtable(L);
    lsmtp_setfuncs(L, core_functions);
    lua_pushliteral(L, "0.1.0");
    lua_setfield(L, -2, "version");
    return 1;
}
