/*
 * Lua loads text chunks only here: this stands in for lundump.c, so every
 * way into the loader (load, loadfile, dofile, require, the C API) refuses a
 * binary chunk. Lua does not check a binary chunk's bytecode, and a crafted
 * one corrupts the interpreter's memory (inside the instance, but still).
 * string.dump stays: what it makes can never be loaded back.
 */
#include "lprefix.h"

#include "lua.h"

#include "ldo.h"
#include "lobject.h"
#include "lundump.h"

LClosure *luaU_undump(lua_State *L, ZIO *Z, const char *name) {
    (void)Z;
    (void)name;
    luaO_pushfstring(L, "attempt to load a binary chunk (only text chunks can be loaded here)");
    luaD_throw(L, LUA_ERRSYNTAX);
}
