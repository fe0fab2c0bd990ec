/* smtp.core: the codecs: base64, quoted-printable, encoded words, the
 * streaming base64 encoder. One part of the binding behind luaopen_smtp_core
 * (csrc/lsmtp.c), whose conventions it follows. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsmtp.h"
#include "smtp_codec.h"

/* ---- codecs ------------------------------------------------------------- */

/* Codec output goes to a scratch buffer owned by a userdata on the stack,
 * so a memory error while making the Lua string leaks nothing. */
smtp_buf *new_scratch(lua_State *L)
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

/* core.text_shape(s) -> only_crlf, seven_bit, longest_line (one pass in
 * C: the Lua patterns it replaces took most of composing a text part). */
static int l_text_shape(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    smtp_text_shape shape;
    smtp_text_shape_of(s, len, &shape);
    lua_pushboolean(L, shape.only_crlf);
    lua_pushboolean(L, shape.seven_bit);
    lua_pushinteger(L, (lua_Integer)shape.longest_line);
    return 3;
}

/* core.crlf(s) -> s with every line end CRLF (s itself when it is so). */
static int l_crlf(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    smtp_text_shape shape;
    smtp_buf *b;
    smtp_text_shape_of(s, len, &shape);
    if (shape.only_crlf) {
        lua_settop(L, 1);
        return 1;
    }
    b = new_scratch(L);
    return push_scratch(L, b, smtp_crlf(s, len, b));
}

/* The streaming base64 encoder: enc:update(s) -> encoded bytes so far,
 * enc:finish() -> the rest. A file is encoded block by block in constant
 * memory. */
typedef struct lsmtp_encoder {
    smtp_b64 b64;
    smtp_buf out;
    int live;
} lsmtp_encoder;

static int l_b64_encoder(lua_State *L)
{
    lua_Integer line = luaL_optinteger(L, 1, 76);
    lsmtp_encoder *u;
    luaL_argcheck(L, line >= 0 && line % 4 == 0, 1, "line length must be a multiple of 4");
    u = lua_newuserdata(L, sizeof *u);
    smtp_b64_init(&u->b64, (size_t)line);
    smtp_buf_init(&u->out, (size_t)1 << 30);
    u->live = 1;
    lsmtp_setclass(L, ENCODER_MT);
    return 1;
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
    int rc = smtp_b64_update(&u->b64, s, len, &u->out);
    return push_encoded(L, u, rc);
}

static int l_encoder_finish(lua_State *L)
{
    lsmtp_encoder *u = check_encoder(L);
    int rc = smtp_b64_finish(&u->b64, &u->out);
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

static const luaL_Reg codec_functions[] = {
    {"b64encode", l_b64encode},
    {"b64decode", l_b64decode},
    {"qpencode", l_qpencode},
    {"qpdecode", l_qpdecode},
    {"encode_words", l_encode_words},
    {"header_is_plain", l_header_is_plain},
    {"text_shape", l_text_shape},
    {"crlf", l_crlf},
    {"b64_encoder", l_b64_encoder},
    {NULL, NULL},
};

/* Registers the classes and the core functions of this part into the
 * table on top of the stack. */
void lsmtp_open_codec(lua_State *L)
{
    lsmtp_newclass(L, SCRATCH_MT, scratch_methods);
    lsmtp_newclass(L, ENCODER_MT, encoder_methods);
    lsmtp_setfuncs(L, codec_functions);
}
