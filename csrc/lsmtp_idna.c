/* smtp.core: IDNA2008 (libidn2). One part of the binding behind
 * luaopen_smtp_core (csrc/lsmtp.c), whose conventions it follows. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsmtp.h"

#include <idn2.h>

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

static const luaL_Reg idna_functions[] = {
    {"idna_to_ascii", l_idna_to_ascii},
    {NULL, NULL},
};

/* Registers the classes and the core functions of this part into the
 * table on top of the stack. */
void lsmtp_open_idna(lua_State *L)
{
    lsmtp_setfuncs(L, idna_functions);
}
