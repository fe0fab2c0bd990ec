/* The Lua binding's private header: what the parts of smtp.core share
 * (csrc/lsmtp.c and csrc/lsmtp_*.c, one per subsystem). Not installed.
 *
 * Conventions (every part): misuse (wrong argument types, a call in the
 * wrong state) raises; failures of the world return nil, "code", "message"
 * (push_result). Every C object lives inside a userdata whose __gc frees
 * it, and the metatable is set only once the object is initialised, so a
 * Lua error raised at any point leaks nothing.
 */
#ifndef LSMTP_H
#define LSMTP_H

#include "lsmtp_compat.h"
#include "smtp_buf.h"
#include "smtp_engine.h"
#include "smtp_error.h"

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

/* The Lua name of an SMTP_E_* code: "argument", "size", "limit", ... */
const char *code_name(int rc);
/* true, or nil + code + message; out of memory and state misuse raise. */
int push_result(lua_State *L, int rc, const char *msg);
/* A string argument that C will treat as NUL-terminated (*bad: it holds a
 * NUL); opt_cstring gives "" for none or nil. */
const char *check_cstring(lua_State *L, int idx, int *bad);
const char *opt_cstring(lua_State *L, int idx, int *bad);

/* The engine's userdata (lsmtp_engine.c); the socket flushes its output
 * straight from it (lsmtp_net.c). */
typedef struct lsmtp_engine {
    smtp_engine e;
    int live;
} lsmtp_engine;

/* A scratch buffer owned by a new userdata on the stack (lsmtp_codec.c):
 * output built there leaks nothing when making the Lua string raises. */
smtp_buf *new_scratch(lua_State *L);

/* Each part registers its classes and functions into the table on top. */
void lsmtp_open_engine(lua_State *L);
void lsmtp_open_codec(lua_State *L);
void lsmtp_open_sasl(lua_State *L);
void lsmtp_open_net(lua_State *L);
void lsmtp_open_dkim(lua_State *L);
void lsmtp_open_idna(lua_State *L);

#endif
