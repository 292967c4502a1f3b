/*
 * The sandlot Lua guest: Lua 5.4 behind the `sandbox` world of
 * wit/sandlot.wit (the C bindings in ../c-bindings, made by wit-bindgen c).
 *
 * One Lua state lives for the life of the instance, so `eval` and `predict`
 * see what `run` left behind. The user-facing parts (the `sandlot` module,
 * `require` of the program's own files, JSON, error reports with their
 * traceback) are written in prelude.lua over the natives below; every call
 * goes through one of its `__sandlot` entry points under `pcall`.
 *
 * Lua's errors unwind with setjmp/longjmp, which clang lowers to wasm
 * exceptions (-mllvm -wasm-enable-sjlj); the host runs with exceptions on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"
#include "prelude.h"
#include "sandbox.h"

static lua_State *L;

static void set_string(sandbox_string_t *out, const char *s, size_t len) {
    out->ptr = malloc(len ? len : 1);
    if (out->ptr)
        memcpy(out->ptr, s, len);
    out->len = out->ptr ? len : 0;
}

static void push_host_string(lua_State *l, const sandbox_string_t *s) { lua_pushlstring(l, (const char *)s->ptr, s->len); }

static void to_host_string(lua_State *l, int index, sandbox_string_t *out) {
    size_t len;
    const char *s = luaL_checklstring(l, index, &len);
    set_string(out, s, len);
}

/* Raises the host's error message as a Lua error (after freeing it). */
static int host_error(lua_State *l, sandbox_string_t *err) {
    lua_pushlstring(l, (const char *)err->ptr, err->len);
    sandbox_string_free(err);
    return lua_error(l);
}

/* ---- natives for prelude.lua ---- */

static int n_set_placeholder(lua_State *l) {
    sandbox_string_t name, value, err;
    to_host_string(l, 1, &name);
    to_host_string(l, 2, &value);
    bool ok = sandlot_guest_placeholders_set(&name, &value, &err);
    sandbox_string_free(&name);
    sandbox_string_free(&value);
    return ok ? 0 : host_error(l, &err);
}

static int n_get_placeholder(lua_State *l) {
    sandbox_string_t name, ret;
    to_host_string(l, 1, &name);
    bool found = sandlot_guest_placeholders_get(&name, &ret);
    sandbox_string_free(&name);
    if (!found)
        return 0;
    push_host_string(l, &ret);
    sandbox_string_free(&ret);
    return 1;
}

static int n_register_model(lua_State *l) {
    sandbox_string_t name, err;
    to_host_string(l, 1, &name);
    bool ok = sandlot_guest_models_register(&name, &err);
    sandbox_string_free(&name);
    return ok ? 0 : host_error(l, &err);
}

static int n_describe(lua_State *l) {
    luaL_checktype(l, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(l, 1);
    sandbox_list_f64_t values = {.ptr = malloc(sizeof(double) * (n > 0 ? (size_t)n : 1)), .len = (size_t)(n > 0 ? n : 0)};
    if (!values.ptr)
        return luaL_error(l, "not enough memory");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(l, 1, i);
        int is_number;
        values.ptr[i - 1] = lua_tonumberx(l, -1, &is_number);
        lua_pop(l, 1);
        if (!is_number) {
            free(values.ptr);
            return luaL_error(l, "stats: value %d is not a number", (int)i);
        }
    }
    sandlot_guest_stats_summary_t s;
    sandbox_string_t err;
    bool ok = sandlot_guest_stats_describe(&values, &s, &err);
    free(values.ptr);
    if (!ok)
        return host_error(l, &err);
    lua_createtable(l, 0, 8);
    lua_pushinteger(l, (lua_Integer)s.count);
    lua_setfield(l, -2, "count");
    const struct { const char *name; double value; } fields[] = {
        {"mean", s.mean}, {"std", s.std}, {"min", s.min}, {"q1", s.q1},
        {"median", s.median}, {"q3", s.q3}, {"max", s.max},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        lua_pushnumber(l, fields[i].value);
        lua_setfield(l, -2, fields[i].name);
    }
    return 1;
}

/* engine(command, args_json) -> true, answer_json | false, error */
static int n_engine(lua_State *l) {
    sandbox_string_t command, args, ret, err;
    to_host_string(l, 1, &command);
    to_host_string(l, 2, &args);
    bool ok = sandlot_guest_engine_command(&command, &args, &ret, &err);
    sandbox_string_free(&command);
    sandbox_string_free(&args);
    lua_pushboolean(l, ok);
    push_host_string(l, ok ? &ret : &err);
    sandbox_string_free(ok ? &ret : &err);
    return 2;
}

static int n_context(lua_State *l) {
    sandbox_string_t ret;
    if (!sandlot_guest_input_context(&ret))
        return 0;
    push_host_string(l, &ret);
    sandbox_string_free(&ret);
    return 1;
}

/* os.clock: seconds since the instance started (WASI has no process clock). */
static int n_clock(lua_State *l) {
    static struct timespec start;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (start.tv_sec == 0 && start.tv_nsec == 0)
        start = now;
    lua_pushnumber(l, (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9);
    return 1;
}

/* Flushes stdout and stderr (print and io.write go through C stdio). */
static int n_flush(lua_State *l) {
    (void)l;
    fflush(stdout);
    fflush(stderr);
    return 0;
}

static const luaL_Reg natives[] = {
    {"set_placeholder", n_set_placeholder}, {"get_placeholder", n_get_placeholder},
    {"register_model", n_register_model},   {"describe", n_describe},
    {"engine", n_engine},                   {"context", n_context},
    {"flush", n_flush},                     {"clock", n_clock},
    {NULL, NULL},
};

/* ---- the state and the prelude's entry points ---- */

/* Makes the state, its libraries and the prelude, once. sandlot calls it
 * before the component is compiled (sandlot-init) and bakes the memory it
 * leaves into the module, so an instance usually finds it done. */
static bool start(void) {
    if (L)
        return true;
    L = luaL_newstate();
    if (!L)
        return false;
    luaL_openlibs(L);
    /* Line-buffered: output reaches the host as lines are printed. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    luaL_newlib(L, natives);
    lua_setglobal(L, "__sandlot_native");
    if (luaL_loadbuffer(L, (const char *)prelude_lua, prelude_lua_len, "=prelude") != LUA_OK ||
        lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "sandlot: the Lua prelude failed: %s\n", lua_tostring(L, -1));
        lua_close(L);
        L = NULL;
        return false;
    }
    return true;
}

/* Whether this instance has seeded math.random: false in the baked image
 * (whose seed every instance would share), so each instance seeds its own,
 * from the host's randomness, on its first call. */
static bool seeded;

static bool init(void) {
    if (!start())
        return false;
    if (!seeded) {
        uint64_t seed[2];
        if (getentropy(seed, sizeof seed) == 0) {
            lua_getglobal(L, "math");
            lua_getfield(L, -1, "randomseed");
            lua_pushinteger(L, (lua_Integer)seed[0]);
            lua_pushinteger(L, (lua_Integer)seed[1]);
            if (lua_pcall(L, 2, 0, 0) != LUA_OK)
                lua_pop(L, 1);
            lua_pop(L, 1);
        }
        seeded = true;
    }
    return true;
}

/* Pushes the prelude's entry point `name`. */
static void entry(const char *name) {
    lua_getglobal(L, "__sandlot");
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
}

/* Calls the entry point on the stack with `args` arguments; it returns a
 * status and the display of the chunk's value (or nil). */
static void call_outcome(int args, sandlot_guest_types_outcome_t *ret) {
    ret->status = 1;
    if (lua_pcall(L, args, 2, 0) == LUA_OK) {
        ret->status = (int32_t)lua_tointeger(L, -2);
        size_t len = 0;
        const char *value = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (value) {
            set_string(&ret->value.val, value, len);
            ret->value.is_some = true;
        }
    } else {
        fprintf(stderr, "sandlot: %s\n", lua_tostring(L, -1));
    }
    lua_settop(L, 0);
    fflush(stdout);
    fflush(stderr);
}

void exports_sandbox_run(sandbox_program_t *program, sandlot_guest_types_outcome_t *ret) {
    ret->status = 1;
    ret->value.is_some = false;
    if (!init()) {
        fputs("sandlot: the Lua interpreter could not start\n", stderr);
        goto done;
    }
    entry("run");
    lua_createtable(L, 0, (int)program->files.len);
    for (size_t i = 0; i < program->files.len; i++) {
        push_host_string(L, &program->files.ptr[i].name);
        push_host_string(L, &program->files.ptr[i].content);
        lua_settable(L, -3);
    }
    push_host_string(L, &program->main_file);
    lua_createtable(L, (int)program->args.len, 0);
    for (size_t i = 0; i < program->args.len; i++) {
        push_host_string(L, &program->args.ptr[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_createtable(L, 0, (int)program->env.len);
    for (size_t i = 0; i < program->env.len; i++) {
        push_host_string(L, &program->env.ptr[i].f0);
        push_host_string(L, &program->env.ptr[i].f1);
        lua_settable(L, -3);
    }
    call_outcome(4, ret);
done:
    sandlot_guest_types_program_free(program);
}

void exports_sandbox_eval(sandbox_string_t *code, sandlot_guest_types_outcome_t *ret) {
    ret->status = 1;
    ret->value.is_some = false;
    if (init()) {
        entry("eval");
        push_host_string(L, code);
        call_outcome(1, ret);
    }
    sandbox_string_free(code);
}

/* Calls the prelude's `method(name, input)`; true with its string result on
 * the stack, or false with the error message there. */
static bool call_model(const char *method, sandbox_string_t *name, sandbox_string_t *input) {
    entry(method);
    push_host_string(L, name);
    push_host_string(L, input);
    bool ok = lua_pcall(L, 2, 1, 0) == LUA_OK;
    fflush(stdout);
    fflush(stderr);
    return ok;
}

static void result_string(sandbox_string_t *out) {
    size_t len = 0;
    const char *s = lua_tolstring(L, -1, &len);
    if (!s) {
        s = "the model failed";
        len = strlen(s);
    }
    set_string(out, s, len);
    lua_settop(L, 0);
}

bool exports_sandbox_predict(sandbox_string_t *name, sandbox_string_t *input, sandbox_string_t *ret,
                             sandbox_string_t *err) {
    bool ok = false;
    if (!init()) {
        set_string(err, "the Lua interpreter could not start", 35);
    } else {
        ok = call_model("predict", name, input);
        result_string(ok ? ret : err);
    }
    sandbox_string_free(name);
    sandbox_string_free(input);
    return ok;
}

bool exports_sandbox_train(sandbox_string_t *name, sandbox_string_t *input, sandbox_string_t *err) {
    bool ok = false;
    if (!init()) {
        set_string(err, "the Lua interpreter could not start", 35);
    } else {
        ok = call_model("train", name, input);
        if (ok)
            lua_settop(L, 0);
        else
            result_string(err);
    }
    sandbox_string_free(name);
    sandbox_string_free(input);
    return ok;
}

/* Starts the interpreter ahead of any run (src/guest/prebake.rs): 0 once started. */
__attribute__((export_name("sandlot-init"))) int32_t sandlot_init(void) {
    return start() ? 0 : 1;
}
