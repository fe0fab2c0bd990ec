/* Lua 5.1 / LuaJIT / 5.2 / 5.3 shims for the 5.4 API that lsmtp.c uses.
 *
 * Every helper is static and carries the lsmtp_ prefix: defining luaL_*
 * names would clash with LuaJIT 2.1, which already has several of them.
 * Features are tested where a macro exists, the version number otherwise.
 */
#ifndef LSMTP_COMPAT_H
#define LSMTP_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 502
#define lsmtp_setfuncs(L, l) luaL_setfuncs((L), (l), 0)
#else
static inline void lsmtp_setfuncs(lua_State *L, const luaL_Reg *l)
{
    for (; l->name != NULL; l++) {
        lua_pushcfunction(L, l->func);
        lua_setfield(L, -2, l->name);
    }
}
#endif

/* luaL_checkudata with a type name in the message on every version. */
static inline void *lsmtp_checkudata(lua_State *L, int idx, const char *tname)
{
    return luaL_checkudata(L, idx, tname);
}

/* Creates the metatable tname (once) with methods, __index to itself. */
static inline void lsmtp_newclass(lua_State *L, const char *tname, const luaL_Reg *methods)
{
    if (luaL_newmetatable(L, tname)) {
        lsmtp_setfuncs(L, methods);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

static inline void lsmtp_setclass(lua_State *L, const char *tname)
{
    luaL_getmetatable(L, tname);
    lua_setmetatable(L, -2);
}

#endif
