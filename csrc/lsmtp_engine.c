/* smtp.core: the engine (smtp_engine) and the framer and line checker
 * (smtp_frame). One part of the binding behind luaopen_smtp_core
 * (csrc/lsmtp.c), whose conventions it follows. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsmtp.h"
#include "smtp_engine.h"
#include "smtp_frame.h"

/* ---- engine ------------------------------------------------------------- */

static smtp_engine *check_engine(lua_State *L)
{
    lsmtp_engine *u = lsmtp_checkudata(L, 1, ENGINE_MT);
    if (!u->live)
        luaL_error(L, "smtp.core: engine used after free");
    return &u->e;
}

static size_t opt_size_field(lua_State *L, int t, const char *name, size_t def, double max)
{
    lua_Number v;
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return def;
    }
    v = luaL_checknumber(L, -1);
    lua_pop(L, 1);
    if (!(v >= 1 && v <= max))
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
        lim.max_line = opt_size_field(L, 1, "max_line", lim.max_line, 1e12);
        lim.max_lines = opt_size_field(L, 1, "max_lines", lim.max_lines, 1e12);
        lim.max_output = opt_size_field(L, 1, "max_output", lim.max_output, 1e12);
        /* An int in the engine, and each staged command may take ~3 KB. */
        lim.max_commands = (int)opt_size_field(L, 1, "max_commands",
                                               (size_t)lim.max_commands, 1e6);
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
        lua_pushinteger(L, (lua_Integer)smtp_engine_last_txn(e));
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
                        (int)smtp_engine_line_error(e));
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
        lua_pushinteger(L, (lua_Integer)smtp_engine_chunk_len(e));
        return 2;
    }
    if (rc == SMTP_E_LINE) {
        lua_pushnil(L);
        lua_pushstring(L, "line");
        lua_pushfstring(L, "message line %d is longer than 998 octets", (int)smtp_engine_line_error(e));
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
    lua_pushnumber(L, (lua_Number)smtp_engine_written(check_engine(L)));
    return 1;
}

static int l_engine_sent(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)smtp_engine_sent(check_engine(L)));
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
/* eng:set_trace(on), eng:trace(): the state transitions since the last
 * call, "from -> to" lines, or nil (debug = 2 prints them). */
static int l_engine_set_trace(lua_State *L)
{
    smtp_engine_set_trace(check_engine(L), lua_toboolean(L, 2));
    return 0;
}

static int l_engine_trace(lua_State *L)
{
    size_t len;
    const char *p = smtp_engine_trace(check_engine(L), &len);
    if (len == 0)
        return 0;
    lua_pushlstring(L, p, len);
    return 1;
}

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
    {"set_trace", l_engine_set_trace},
    {"trace", l_engine_trace},
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

static const luaL_Reg engine_functions[] = {
    {"engine", l_engine_new},
    {"framer", l_framer_new},
    {NULL, NULL},
};

/* Registers the classes and the core functions of this part into the
 * table on top of the stack. */
void lsmtp_open_engine(lua_State *L)
{
    lsmtp_newclass(L, ENGINE_MT, engine_methods);
    lsmtp_newclass(L, FRAMER_MT, framer_methods);
    lsmtp_setfuncs(L, engine_functions);
}
