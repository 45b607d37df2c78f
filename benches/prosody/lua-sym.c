/* A lua5.4 interpreter for profiling Prosody (benches/prosody/profile).
 *
 * Debian's lua5.4 is stripped, so perf and callgrind cannot name the
 * collector's or the VM's functions. This one links Debian's static
 * liblua5.4.a, which keeps its symbols, and exports them (-Wl,-E) for the C
 * modules Prosody loads. Its allocator counts what the Lua state allocates
 * (new blocks and growth), printed to stderr on SIGRTMIN+3 as
 * "LUA-ALLOC <bytes> <blocks>". */
#include <stdio.h>
#include <lua5.4/lua.h>
#include <lua5.4/lauxlib.h>
#include <lua5.4/lualib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* Bytes and blocks the Lua state allocates (new blocks and growth), printed
 * to stderr on SIGRTMIN+3, so that a benchmark can take them per phase. */
static volatile unsigned long long alloc_bytes, alloc_count, gc_calls;
static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (nsize == 0) { free(ptr); return NULL; }
    if (ptr == NULL) { alloc_bytes += nsize; alloc_count++; }
    else if (nsize > osize) { alloc_bytes += nsize - osize; alloc_count++; }
    return realloc(ptr, nsize);
}
static void dump(int sig) {
    (void)sig;
    char buf[128]; char *p = buf + sizeof buf; *--p = '\n';
    unsigned long long v[2] = { alloc_bytes, alloc_count };
    for (int i = 1; i >= 0; i--) {
        unsigned long long x = v[i];
        do { *--p = '0' + x % 10; x /= 10; } while (x);
        *--p = ' ';
    }
    const char *tag = "LUA-ALLOC"; size_t n = strlen(tag); p -= n; memcpy(p, tag, n);
    (void)!write(2, p, buf + sizeof buf - p);
}
static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error)", 1);
    return 1;
}
int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: lua-sym script [args]\n"); return 1; }
    signal(SIGRTMIN + 3, dump);
    lua_State *L = lua_newstate(counting_alloc, NULL);
    luaL_openlibs(L);
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i - 1); }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, argv[1]) != LUA_OK) { fprintf(stderr, "%s\n", lua_tostring(L, -1)); return 1; }
    for (int i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
    if (lua_pcall(L, argc - 2, 0, 1) != LUA_OK) { fprintf(stderr, "%s\n", lua_tostring(L, -1)); return 1; }
    lua_close(L);
    return 0;
}
