/*
 * The sandlot JavaScript guest: QuickJS-NG behind the `sandbox` world of
 * wit/sandlot.wit (bindings generated into bindings/ by wit-bindgen c).
 *
 * One interpreter lives for the life of the instance, so `eval` and `predict`
 * see what `run` left behind. The user-facing globals (console, sandlot,
 * process, timers, require) are written in prelude.js over the native
 * functions below. After any code runs, pending jobs (promises) are drained
 * and timers fire in order, sleeping through WASI so the host's deadline
 * applies to them.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "quickjs.h"
#include "sandbox.h"
#include "prelude.h"

/* QuickJS's own stack check, so deep recursion is a catchable RangeError long
 * before the wasm stack or the shadow stack overflows. */
#define JS_STACK_LIMIT (1024 * 1024)

static JSRuntime *rt;
static JSContext *ctx;
static JSValue native_obj;

typedef struct {
    char *name;
    char *content;
    size_t len;
} user_file;

static user_file *files;
static size_t file_count;

/* Set by process.exit(): the status to return once the stack unwinds. */
static int exit_requested = -1;

static void write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

static void write_str(int fd, const char *s) { write_all(fd, s, strlen(s)); }

static const user_file *find_file(const char *name) {
    for (size_t i = 0; i < file_count; i++)
        if (strcmp(files[i].name, name) == 0)
            return &files[i];
    return NULL;
}

static void free_files(void) {
    for (size_t i = 0; i < file_count; i++) {
        free(files[i].name);
        free(files[i].content);
    }
    free(files);
    files = NULL;
    file_count = 0;
}

static char *dup_string(const sandbox_string_t *s) {
    char *out = malloc(s->len + 1);
    if (!out)
        return NULL;
    memcpy(out, s->ptr, s->len);
    out[s->len] = 0;
    return out;
}

static void set_string(sandbox_string_t *out, const char *s, size_t len) {
    out->ptr = malloc(len ? len : 1);
    memcpy(out->ptr, s, len);
    out->len = len;
}

/* ---- reporting errors the way Node does: the error, then its stack ---- */

/* An error report is gathered whole and written in one go, so a listener
 * sees it as one piece of stderr, not five. */
static char *report_buf;
static size_t report_len, report_cap;

static void report_add(const char *s) {
    size_t n = strlen(s);
    if (report_len + n + 1 > report_cap) {
        size_t cap = (report_len + n + 1) * 2;
        char *grown = realloc(report_buf, cap);
        if (!grown)
            return;
        report_buf = grown;
        report_cap = cap;
    }
    memcpy(report_buf + report_len, s, n);
    report_len += n;
}

static void report_flush(void) {
    write_all(2, report_buf, report_len);
    free(report_buf);
    report_buf = NULL;
    report_len = report_cap = 0;
}

static void report_exception(JSValue exc) {
    if (JS_IsError(exc)) {
        JSValue name = JS_GetPropertyStr(ctx, exc, "name");
        JSValue message = JS_GetPropertyStr(ctx, exc, "message");
        JSValue stack = JS_GetPropertyStr(ctx, exc, "stack");
        const char *n = JS_ToCString(ctx, name);
        const char *m = JS_ToCString(ctx, message);
        const char *s = JS_IsUndefined(stack) ? NULL : JS_ToCString(ctx, stack);
        report_add("Uncaught ");
        report_add(n ? n : "Error");
        if (m && *m) {
            report_add(": ");
            report_add(m);
        }
        report_add("\n");
        if (s) {
            report_add(s);
            if (*s && s[strlen(s) - 1] != '\n')
                report_add("\n");
        }
        JS_FreeCString(ctx, n);
        JS_FreeCString(ctx, m);
        if (s)
            JS_FreeCString(ctx, s);
        JS_FreeValue(ctx, name);
        JS_FreeValue(ctx, message);
        JS_FreeValue(ctx, stack);
    } else {
        const char *s = JS_ToCString(ctx, exc);
        report_add("Uncaught ");
        report_add(s ? s : "(unprintable value)");
        report_add("\n");
        if (s)
            JS_FreeCString(ctx, s);
    }
}

/* Frees a thrown value and returns the exit status it means: process.exit()'s
 * own, or 1 after reporting the error (after `prefix`) on stderr. */
static int exit_status_of(JSValue exc, const char *prefix) {
    int status = 1;
    if (exit_requested >= 0) {
        status = exit_requested;
        JS_ResetUncatchableError(ctx);
    } else {
        report_add(prefix);
        report_exception(exc);
        report_flush();
    }
    JS_FreeValue(ctx, exc);
    return status;
}

/* Takes the pending exception; returns the exit status it means. */
static int handle_exception(void) { return exit_status_of(JS_GetException(ctx), ""); }

/* ---- native functions for prelude.js ---- */

static JSValue js_write(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    int fd;
    size_t len;
    if (JS_ToInt32(c, &fd, argv[0]))
        return JS_EXCEPTION;
    const char *s = JS_ToCStringLen(c, &len, argv[1]);
    if (!s)
        return JS_EXCEPTION;
    write_all(fd == 2 ? 2 : 1, s, len);
    JS_FreeCString(c, s);
    return JS_UNDEFINED;
}

/* Standard input, as text: up to `max` bytes read from fd 0 (waiting until
 * some arrive), or null at EOF. A UTF-8 sequence cut by the read is held
 * back for the next one, so no character is split between two strings. */
static char stdin_carry[4];
static size_t stdin_carried;

static JSValue js_read_stdin(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    int32_t max;
    if (JS_ToInt32(c, &max, argv[0]))
        return JS_EXCEPTION;
    if (max < 16)
        max = 16;
    if (max > (1 << 20))
        max = 1 << 20;
    char *buf = malloc((size_t)max + sizeof stdin_carry);
    if (!buf)
        return JS_ThrowOutOfMemory(c);
    memcpy(buf, stdin_carry, stdin_carried);
    size_t len = stdin_carried;
    ssize_t got;
    do {
        got = read(0, buf + len, (size_t)max);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        free(buf);
        return JS_ThrowInternalError(c, "reading standard input failed: %s", strerror(errno));
    }
    len += (size_t)got;
    stdin_carried = 0;
    if (got > 0) {
        /* Hold back an incomplete last sequence (at most 3 bytes). */
        size_t start = len, back = 0;
        while (start > 0 && back < 3 && ((unsigned char)buf[start - 1] & 0xC0) == 0x80) {
            start--;
            back++;
        }
        if (start > 0) {
            unsigned char lead = (unsigned char)buf[start - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            if (need > back + 1) {
                stdin_carried = back + 1;
                memcpy(stdin_carry, buf + start - 1, stdin_carried);
                len -= stdin_carried;
            }
        }
    } else if (len == 0) {
        free(buf);
        return JS_NULL;
    }
    JSValue text = JS_NewStringLen(c, buf, len);
    free(buf);
    return text;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static JSValue js_now(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    return JS_NewFloat64(c, now_ms());
}

static JSValue js_sleep(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    double ms;
    if (JS_ToFloat64(c, &ms, argv[0]))
        return JS_EXCEPTION;
    if (ms > 0) {
        struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6)};
        nanosleep(&ts, NULL);
    }
    return JS_UNDEFINED;
}

static JSValue js_exit(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    int code = 0;
    if (argc > 0 && JS_ToInt32(c, &code, argv[0]))
        return JS_EXCEPTION;
    exit_requested = code & 0xFF;
    JSValue err = JS_NewError(c);
    JS_SetUncatchableError(c, err);
    return JS_Throw(c, err);
}

static JSValue js_has_file(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    const char *name = JS_ToCString(c, argv[0]);
    if (!name)
        return JS_EXCEPTION;
    bool found = find_file(name) != NULL;
    JS_FreeCString(c, name);
    return JS_NewBool(c, found);
}

static JSValue js_read_file(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    const char *name = JS_ToCString(c, argv[0]);
    if (!name)
        return JS_EXCEPTION;
    const user_file *f = find_file(name);
    JS_FreeCString(c, name);
    if (!f)
        return JS_ThrowReferenceError(c, "no such file");
    return JS_NewStringLen(c, f->content, f->len);
}

/* Compiles a CommonJS file as a function of (exports, require, module,
 * __filename, __dirname). The wrapper shares the file's first line, so line
 * numbers in stack traces are the file's own. */
static JSValue js_compile_commonjs(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    const char *name = JS_ToCString(c, argv[0]);
    if (!name)
        return JS_EXCEPTION;
    const user_file *f = find_file(name);
    if (!f) {
        JS_FreeCString(c, name);
        return JS_ThrowReferenceError(c, "no such file");
    }
    static const char head[] = "(function (exports, require, module, __filename, __dirname) {";
    static const char tail[] = "\n})";
    size_t len = sizeof(head) - 1 + f->len + sizeof(tail) - 1;
    char *src = malloc(len + 1);
    if (!src) {
        JS_FreeCString(c, name);
        return JS_ThrowOutOfMemory(c);
    }
    memcpy(src, head, sizeof(head) - 1);
    memcpy(src + sizeof(head) - 1, f->content, f->len);
    memcpy(src + sizeof(head) - 1 + f->len, tail, sizeof(tail) - 1);
    src[len] = 0;
    JSValue fn = JS_Eval(c, src, len, name, JS_EVAL_TYPE_GLOBAL);
    free(src);
    JS_FreeCString(c, name);
    return fn;
}

static JSValue host_error(JSContext *c, sandbox_string_t *err) {
    JSValue e = JS_ThrowInternalError(c, "%.*s", (int)err->len, (const char *)err->ptr);
    sandbox_string_free(err);
    return e;
}

static bool to_host_string(JSContext *c, JSValueConst v, sandbox_string_t *out) {
    size_t len;
    const char *s = JS_ToCStringLen(c, &len, v);
    if (!s)
        return false;
    set_string(out, s, len);
    JS_FreeCString(c, s);
    return true;
}

static JSValue js_set_placeholder(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    sandbox_string_t name, value, err;
    if (!to_host_string(c, argv[0], &name))
        return JS_EXCEPTION;
    if (!to_host_string(c, argv[1], &value)) {
        sandbox_string_free(&name);
        return JS_EXCEPTION;
    }
    bool ok = sandlot_guest_placeholders_set(&name, &value, &err);
    sandbox_string_free(&name);
    sandbox_string_free(&value);
    return ok ? JS_UNDEFINED : host_error(c, &err);
}

static JSValue js_get_placeholder(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    sandbox_string_t name, ret;
    if (!to_host_string(c, argv[0], &name))
        return JS_EXCEPTION;
    bool found = sandlot_guest_placeholders_get(&name, &ret);
    sandbox_string_free(&name);
    if (!found)
        return JS_UNDEFINED;
    JSValue v = JS_NewStringLen(c, (const char *)ret.ptr, ret.len);
    sandbox_string_free(&ret);
    return v;
}

static JSValue js_register_model(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    sandbox_string_t name, err;
    if (!to_host_string(c, argv[0], &name))
        return JS_EXCEPTION;
    bool ok = sandlot_guest_models_register(&name, &err);
    sandbox_string_free(&name);
    return ok ? JS_UNDEFINED : host_error(c, &err);
}

static JSValue js_stats(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    int64_t n;
    if (JS_GetLength(c, argv[0], &n))
        return JS_EXCEPTION;
    sandbox_list_f64_t values = {.ptr = malloc(sizeof(double) * (n ? (size_t)n : 1)), .len = (size_t)n};
    for (int64_t i = 0; i < n; i++) {
        JSValue v = JS_GetPropertyInt64(c, argv[0], i);
        int bad = JS_ToFloat64(c, &values.ptr[i], v);
        JS_FreeValue(c, v);
        if (bad) {
            free(values.ptr);
            return JS_EXCEPTION;
        }
    }
    sandlot_guest_stats_summary_t s;
    sandbox_string_t err;
    bool ok = sandlot_guest_stats_describe(&values, &s, &err);
    free(values.ptr);
    if (!ok) {
        JSValue e = JS_ThrowRangeError(c, "%.*s", (int)err.len, (const char *)err.ptr);
        sandbox_string_free(&err);
        return e;
    }
    JSValue o = JS_NewObject(c);
    JS_SetPropertyStr(c, o, "count", JS_NewFloat64(c, (double)s.count));
    JS_SetPropertyStr(c, o, "mean", JS_NewFloat64(c, s.mean));
    JS_SetPropertyStr(c, o, "std", JS_NewFloat64(c, s.std));
    JS_SetPropertyStr(c, o, "min", JS_NewFloat64(c, s.min));
    JS_SetPropertyStr(c, o, "q1", JS_NewFloat64(c, s.q1));
    JS_SetPropertyStr(c, o, "median", JS_NewFloat64(c, s.median));
    JS_SetPropertyStr(c, o, "q3", JS_NewFloat64(c, s.q3));
    JS_SetPropertyStr(c, o, "max", JS_NewFloat64(c, s.max));
    return o;
}

static JSValue js_engine(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    sandbox_string_t command, args, ret, err;
    if (!to_host_string(c, argv[0], &command))
        return JS_EXCEPTION;
    if (!to_host_string(c, argv[1], &args)) {
        sandbox_string_free(&command);
        return JS_EXCEPTION;
    }
    bool ok = sandlot_guest_engine_command(&command, &args, &ret, &err);
    sandbox_string_free(&command);
    sandbox_string_free(&args);
    if (!ok) {
        JSValue e = JS_NewError(c);
        JS_DefinePropertyValueStr(c, e, "name", JS_NewString(c, "EngineError"), JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
        JS_DefinePropertyValueStr(c, e, "message", JS_NewStringLen(c, (const char *)err.ptr, err.len),
                                  JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
        sandbox_string_free(&err);
        return JS_Throw(c, e);
    }
    JSValue v = JS_NewStringLen(c, (const char *)ret.ptr, ret.len);
    sandbox_string_free(&ret);
    return v;
}

static JSValue js_context(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    sandbox_string_t ret;
    if (!sandlot_guest_input_context(&ret))
        return JS_UNDEFINED;
    JSValue v = JS_NewStringLen(c, (const char *)ret.ptr, ret.len);
    sandbox_string_free(&ret);
    return v;
}

/* ---- the file system: whatever the host preopened (only /data, read-only) ---- */

/* Throws a Node-style error: "ENOENT: no such file or directory, open '/x'", with .code. */
static JSValue fs_error(JSContext *c, const char *syscall, const char *path) {
    int e = errno;
    const char *code = e == ENOENT ? "ENOENT" : e == EACCES ? "EACCES" : e == EPERM ? "EPERM"
                     : e == EROFS ? "EROFS" : e == EISDIR ? "EISDIR" : e == ENOTDIR ? "ENOTDIR"
                     : e == ENOTCAPABLE ? "ENOTCAPABLE" : "EIO";
    JSValue err = JS_NewError(c);
    char message[512];
    snprintf(message, sizeof message, "%s: %s, %s '%s'", code, strerror(e), syscall, path);
    JS_SetPropertyStr(c, err, "message", JS_NewString(c, message));
    JS_SetPropertyStr(c, err, "code", JS_NewString(c, code));
    JS_SetPropertyStr(c, err, "syscall", JS_NewString(c, syscall));
    JS_SetPropertyStr(c, err, "path", JS_NewString(c, path));
    return JS_Throw(c, err);
}

/* fsRead(path, asText): the whole file, as a string or an ArrayBuffer. */
static JSValue js_fs_read(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    const char *path = JS_ToCString(c, argv[0]);
    if (!path)
        return JS_EXCEPTION;
    bool as_text = JS_ToBool(c, argv[1]);
    FILE *f = fopen(path, "rb");
    if (!f) {
        JSValue r = fs_error(c, "open", path);
        JS_FreeCString(c, path);
        return r;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    bool failed = buf && ferror(f);
    fclose(f);
    JSValue r;
    if (!buf)
        r = JS_ThrowOutOfMemory(c);
    else if (failed)
        r = fs_error(c, "read", path);
    else
        r = as_text ? JS_NewStringLen(c, buf, len) : JS_NewArrayBufferCopy(c, (const uint8_t *)buf, len);
    free(buf);
    JS_FreeCString(c, path);
    return r;
}

/* fsWrite(path, text, append): fails unless the host gave a writable folder (it never does). */
static JSValue js_fs_write(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    const char *path = JS_ToCString(c, argv[0]);
    if (!path)
        return JS_EXCEPTION;
    size_t len;
    const char *text = JS_ToCStringLen(c, &len, argv[1]);
    if (!text) {
        JS_FreeCString(c, path);
        return JS_EXCEPTION;
    }
    FILE *f = fopen(path, JS_ToBool(c, argv[2]) ? "ab" : "wb");
    JSValue r = JS_UNDEFINED;
    if (!f || fwrite(text, 1, len, f) != len)
        r = fs_error(c, f ? "write" : "open", path);
    if (f)
        fclose(f);
    JS_FreeCString(c, text);
    JS_FreeCString(c, path);
    return r;
}

/* fsList(path): the names in a folder. */
static JSValue js_fs_list(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    const char *path = JS_ToCString(c, argv[0]);
    if (!path)
        return JS_EXCEPTION;
    DIR *d = opendir(path);
    if (!d) {
        JSValue r = fs_error(c, "scandir", path);
        JS_FreeCString(c, path);
        return r;
    }
    JSValue names = JS_NewArray(c);
    uint32_t i = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (strcmp(entry->d_name, ".") && strcmp(entry->d_name, ".."))
            JS_SetPropertyUint32(c, names, i++, JS_NewString(c, entry->d_name));
    }
    closedir(d);
    JS_FreeCString(c, path);
    return names;
}

/* fsStat(path): {size, file, dir}. */
static JSValue js_fs_stat(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    const char *path = JS_ToCString(c, argv[0]);
    if (!path)
        return JS_EXCEPTION;
    struct stat st;
    JSValue r;
    if (stat(path, &st) != 0) {
        r = fs_error(c, "stat", path);
    } else {
        r = JS_NewObject(c);
        JS_SetPropertyStr(c, r, "size", JS_NewFloat64(c, (double)st.st_size));
        JS_SetPropertyStr(c, r, "file", JS_NewBool(c, S_ISREG(st.st_mode)));
        JS_SetPropertyStr(c, r, "dir", JS_NewBool(c, S_ISDIR(st.st_mode)));
    }
    JS_FreeCString(c, path);
    return r;
}

static const JSCFunctionListEntry native_functions[] = {
    JS_CFUNC_DEF("fsRead", 2, js_fs_read),
    JS_CFUNC_DEF("fsWrite", 3, js_fs_write),
    JS_CFUNC_DEF("fsList", 1, js_fs_list),
    JS_CFUNC_DEF("fsStat", 1, js_fs_stat),
    JS_CFUNC_DEF("write", 2, js_write),
    JS_CFUNC_DEF("readStdin", 1, js_read_stdin),
    JS_CFUNC_DEF("now", 0, js_now),
    JS_CFUNC_DEF("sleep", 1, js_sleep),
    JS_CFUNC_DEF("exit", 1, js_exit),
    JS_CFUNC_DEF("hasFile", 1, js_has_file),
    JS_CFUNC_DEF("readFile", 1, js_read_file),
    JS_CFUNC_DEF("compileCommonJs", 1, js_compile_commonjs),
    JS_CFUNC_DEF("setPlaceholder", 2, js_set_placeholder),
    JS_CFUNC_DEF("getPlaceholder", 1, js_get_placeholder),
    JS_CFUNC_DEF("registerModel", 1, js_register_model),
    JS_CFUNC_DEF("stats", 1, js_stats),
    JS_CFUNC_DEF("engine", 2, js_engine),
    JS_CFUNC_DEF("context", 0, js_context),
};

/* ---- ES modules from the program's files ---- */

static char *normalize_module(JSContext *c, const char *base, const char *name, void *opaque) {
    size_t cap = strlen(base) + strlen(name) + 16;
    char *out = js_malloc(c, cap);
    if (!out)
        return NULL;
    out[0] = 0;
    if (name[0] == '.') {
        const char *slash = strrchr(base, '/');
        if (slash) {
            memcpy(out, base, (size_t)(slash - base));
            out[slash - base] = 0;
        }
    }
    const char *p = name;
    while (*p) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.')) {
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            char *slash = strrchr(out, '/');
            if (slash)
                *slash = 0;
            else
                out[0] = 0;
        } else {
            if (out[0])
                strcat(out, "/");
            strncat(out, p, n);
        }
        p += n;
        if (*p == '/')
            p++;
    }
    if (!find_file(out)) {
        size_t len = strlen(out);
        strcat(out, ".js");
        if (!find_file(out))
            out[len] = 0;
    }
    return out;
}

static JSModuleDef *load_module(JSContext *c, const char *name, void *opaque) {
    const user_file *f = find_file(name);
    if (!f) {
        JS_ThrowReferenceError(c, "could not load module '%s': not one of the program's files", name);
        return NULL;
    }
    JSValue fn = JS_Eval(c, f->content, f->len, name, JS_EVAL_TYPE_MODULE | JS_EVAL_FLAG_COMPILE_ONLY);
    if (JS_IsException(fn))
        return NULL;
    JSModuleDef *m = JS_VALUE_GET_PTR(fn);
    JS_FreeValue(c, fn);
    return m;
}

/* ---- unhandled promise rejections end the program, as in Node ---- */

static JSValue unhandled_rejection;
static bool has_unhandled_rejection;

static void track_rejection(JSContext *c, JSValueConst promise, JSValueConst reason, bool is_handled, void *opaque) {
    if (!is_handled) {
        if (has_unhandled_rejection)
            JS_FreeValue(c, unhandled_rejection);
        unhandled_rejection = JS_DupValue(c, reason);
        has_unhandled_rejection = true;
    } else if (has_unhandled_rejection) {
        JS_FreeValue(c, unhandled_rejection);
        has_unhandled_rejection = false;
    }
}

/* Builds the runtime, its context and the prelude, once. sandlot calls it
 * before the component is compiled (sandlot-init) and bakes the memory it
 * leaves into the module, so an instance usually finds it done. */
static bool start(void) {
    if (ctx)
        return true;
    rt = JS_NewRuntime();
    if (!rt)
        return false;
    JS_SetMaxStackSize(rt, JS_STACK_LIMIT);
    JS_SetModuleLoaderFunc(rt, normalize_module, load_module, NULL);
    JS_SetHostPromiseRejectionTracker(rt, track_rejection, NULL);
    ctx = JS_NewContext(rt);
    if (!ctx)
        return false;
    native_obj = JS_NewObject(ctx);
    JS_SetPropertyFunctionList(ctx, native_obj, native_functions,
                               sizeof(native_functions) / sizeof(native_functions[0]));
    JSValue prelude = JS_Eval(ctx, (const char *)prelude_js, prelude_js_len, "<sandlot prelude>", JS_EVAL_TYPE_GLOBAL);
    if (JS_IsException(prelude)) {
        handle_exception();
        return false;
    }
    JSValue r = JS_Call(ctx, prelude, JS_UNDEFINED, 1, (JSValueConst *)&native_obj);
    JS_FreeValue(ctx, prelude);
    if (JS_IsException(r)) {
        handle_exception();
        return false;
    }
    JS_FreeValue(ctx, r);
    return true;
}

/* Added to quickjs.c by build.sh. */
void sandlot_seed_random(JSContext *c, uint64_t seed);

/* Whether this instance has seeded Math.random: false in the baked image, so
 * each instance seeds its own, from the host's randomness, on its first call. */
static bool seeded;

static bool init(void) {
    if (!start())
        return false;
    if (!seeded) {
        uint64_t seed;
        if (getentropy(&seed, sizeof seed) == 0)
            sandlot_seed_random(ctx, seed);
        seeded = true;
    }
    return true;
}

/* Runs pending jobs, then timers one by one (each followed by its jobs).
 * Returns the exit status: 0, or that of the first uncaught error. */
static int settle(void) {
    for (;;) {
        JSContext *job_ctx;
        int r;
        while ((r = JS_ExecutePendingJob(rt, &job_ctx)) > 0) {
        }
        if (r < 0)
            return handle_exception();
        if (has_unhandled_rejection) {
            has_unhandled_rejection = false;
            return exit_status_of(unhandled_rejection, "(in promise) ");
        }
        JSValue run_next = JS_GetPropertyStr(ctx, native_obj, "runNextTimer");
        JSValue more = JS_Call(ctx, run_next, JS_UNDEFINED, 0, NULL);
        JS_FreeValue(ctx, run_next);
        if (JS_IsException(more))
            return handle_exception();
        bool again = JS_ToBool(ctx, more);
        JS_FreeValue(ctx, more);
        if (!again)
            return 0;
    }
}

/* Whether a source uses static import/export: a line starting with either
 * keyword. (JS_DetectModule calls almost any script a module.) */
static bool module_syntax(const char *src, size_t len) {
    const char *p = src, *end = src + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        size_t left = (size_t)(end - p);
        if ((left > 7 && memcmp(p, "export", 6) == 0 && strchr(" {*", p[6])) ||
            (left > 7 && memcmp(p, "import", 6) == 0 && strchr(" {*\"'", p[6])))
            return true;
        const char *nl = memchr(p, '\n', left);
        if (!nl)
            break;
        p = nl + 1;
    }
    return false;
}

/* The display of a script's completion value (a fulfilled promise's result),
 * through prelude.js's `native.display`; false when it has none. */
static bool display(JSValueConst completion, sandbox_string_t *out) {
    JSValue value = JS_PromiseState(ctx, completion) == JS_PROMISE_FULFILLED ? JS_PromiseResult(ctx, completion)
                                                                              : JS_DupValue(ctx, completion);
    JSValue fn = JS_GetPropertyStr(ctx, native_obj, "display");
    JSValue shown = JS_Call(ctx, fn, JS_UNDEFINED, 1, (JSValueConst *)&value);
    JS_FreeValue(ctx, fn);
    JS_FreeValue(ctx, value);
    bool ok = false;
    if (JS_IsString(shown)) {
        size_t n = 0;
        const char *text = JS_ToCStringLen(ctx, &n, shown);
        if (text) {
            set_string(out, text, n);
            JS_FreeCString(ctx, text);
            ok = true;
        }
    } else if (JS_IsException(shown)) {
        JS_FreeValue(ctx, JS_GetException(ctx));
    }
    JS_FreeValue(ctx, shown);
    return ok;
}

/* Evaluates code, as a module when it uses import/export, then settles.
 * A script's completion value is displayed into `value` (if given). */
static int evaluate(const char *src, size_t len, const char *filename, bool allow_module, sandbox_option_string_t *value) {
    exit_requested = -1;
    bool module = allow_module && module_syntax(src, len);
    JSValue result = JS_Eval(ctx, src, len, filename, module ? JS_EVAL_TYPE_MODULE : JS_EVAL_TYPE_GLOBAL);
    if (JS_IsException(result))
        return handle_exception();
    if (module && JS_PromiseState(ctx, result) == JS_PROMISE_REJECTED) {
        /* The module threw before its first await: an uncaught error, not a rejection. */
        JSValue reason = JS_PromiseResult(ctx, result);
        JS_FreeValue(ctx, result);
        if (has_unhandled_rejection) {
            JS_FreeValue(ctx, unhandled_rejection);
            has_unhandled_rejection = false;
        }
        return exit_status_of(reason, "");
    }
    int status = settle();
    if (status == 0 && module && JS_PromiseState(ctx, result) == JS_PROMISE_REJECTED) {
        JSValue reason = JS_PromiseResult(ctx, result);
        report_exception(reason);
        report_flush();
        JS_FreeValue(ctx, reason);
        has_unhandled_rejection = false;
        status = 1;
    }
    if (status == 0) {
        JSValue process = JS_GetPropertyStr(ctx, JS_GetGlobalObject(ctx), "process");
        JSValue code = JS_GetPropertyStr(ctx, process, "exitCode");
        int32_t c = 0;
        if (!JS_IsUndefined(code) && JS_ToInt32(ctx, &c, code) == 0)
            status = c & 0xFF;
        JS_FreeValue(ctx, code);
        JS_FreeValue(ctx, process);
    }
    if (status == 0 && !module && value && !JS_IsUndefined(result))
        value->is_some = display(result, &value->val);
    JS_FreeValue(ctx, result);
    return status;
}

/* ---- exports ---- */

void exports_sandbox_run(sandbox_program_t *program, sandlot_guest_types_outcome_t *ret) {
    int32_t status = 1;
    ret->value.is_some = false;
    if (!init()) {
        write_str(2, "sandlot: the JavaScript interpreter could not start\n");
        goto done;
    }
    free_files();
    files = calloc(program->files.len ? program->files.len : 1, sizeof(user_file));
    for (size_t i = 0; i < program->files.len; i++) {
        files[i].name = dup_string(&program->files.ptr[i].name);
        files[i].content = dup_string(&program->files.ptr[i].content);
        files[i].len = program->files.ptr[i].content.len;
    }
    file_count = program->files.len;
    char *main_name = dup_string(&program->main_file);

    JSValue global = JS_GetGlobalObject(ctx);
    JSValue process = JS_GetPropertyStr(ctx, global, "process");
    JSValue argv = JS_NewArray(ctx);
    JS_SetPropertyUint32(ctx, argv, 0, JS_NewString(ctx, "sandlot"));
    JS_SetPropertyUint32(ctx, argv, 1, JS_NewString(ctx, main_name));
    for (size_t i = 0; i < program->args.len; i++)
        JS_SetPropertyUint32(ctx, argv, (uint32_t)(i + 2),
                             JS_NewStringLen(ctx, (const char *)program->args.ptr[i].ptr, program->args.ptr[i].len));
    JS_SetPropertyStr(ctx, process, "argv", argv);
    JSValue env = JS_NewObject(ctx);
    for (size_t i = 0; i < program->env.len; i++) {
        char *key = dup_string(&program->env.ptr[i].f0);
        JS_SetPropertyStr(ctx, env, key,
                          JS_NewStringLen(ctx, (const char *)program->env.ptr[i].f1.ptr, program->env.ptr[i].f1.len));
        free(key);
    }
    JS_SetPropertyStr(ctx, process, "env", env);
    JS_FreeValue(ctx, process);
    JS_FreeValue(ctx, global);

    JSValue reset = JS_GetPropertyStr(ctx, native_obj, "resetModules");
    JSValue main_value = JS_NewString(ctx, main_name);
    JS_FreeValue(ctx, JS_Call(ctx, reset, JS_UNDEFINED, 1, (JSValueConst *)&main_value));
    JS_FreeValue(ctx, main_value);
    JS_FreeValue(ctx, reset);

    const user_file *main_file = find_file(main_name);
    if (!main_file) {
        write_str(2, "sandlot: the main file is not among the program's files\n");
    } else {
        status = evaluate(main_file->content, main_file->len, main_file->name, true, &ret->value);
    }
    free(main_name);
done:
    sandlot_guest_types_program_free(program);
    ret->status = status;
}

void exports_sandbox_eval(sandbox_string_t *code, sandlot_guest_types_outcome_t *ret) {
    int32_t status = 1;
    ret->value.is_some = false;
    if (init()) {
        char *src = dup_string(code);
        status = evaluate(src, code->len, "<eval>", false, &ret->value);
        free(src);
    }
    sandbox_string_free(code);
    ret->status = status;
}

/* Calls prelude.js's `native[method](name, input)` (a model's predict or
 * train), settling a promise it returns. Returns the value (JS_EXCEPTION
 * after a failure, with the exception pending). */
static JSValue call_model(const char *method, sandbox_string_t *name, sandbox_string_t *input) {
    exit_requested = -1;
    JSValue fn = JS_GetPropertyStr(ctx, native_obj, method);
    JSValue args[2] = {JS_NewStringLen(ctx, (const char *)name->ptr, name->len),
                       JS_NewStringLen(ctx, (const char *)input->ptr, input->len)};
    JSValue result = JS_Call(ctx, fn, JS_UNDEFINED, 2, (JSValueConst *)args);
    JS_FreeValue(ctx, fn);
    JS_FreeValue(ctx, args[0]);
    JS_FreeValue(ctx, args[1]);
    if (!JS_IsException(result) && settle() == 0) {
        if (JS_PromiseState(ctx, result) == JS_PROMISE_FULFILLED) {
            JSValue inner = JS_PromiseResult(ctx, result);
            JS_FreeValue(ctx, result);
            result = inner;
        } else if (JS_PromiseState(ctx, result) == JS_PROMISE_REJECTED) {
            JS_Throw(ctx, JS_PromiseResult(ctx, result));
            JS_FreeValue(ctx, result);
            result = JS_EXCEPTION;
        }
    }
    return result;
}

/* The pending exception as the error of a model call. */
static void model_error(sandbox_string_t *err) {
    JSValue exc = JS_GetException(ctx);
    JS_ResetUncatchableError(ctx);
    const char *s = JS_ToCString(ctx, exc);
    const char *msg = s ? s : "the model failed";
    set_string(err, msg, strlen(msg));
    if (s)
        JS_FreeCString(ctx, s);
    JS_FreeValue(ctx, exc);
}

bool exports_sandbox_predict(sandbox_string_t *name, sandbox_string_t *input, sandbox_string_t *ret,
                             sandbox_string_t *err) {
    bool ok = false;
    const char *failure = "the JavaScript interpreter could not start";
    if (!init()) {
        set_string(err, failure, strlen(failure));
        goto done;
    }
    JSValue result = call_model("predict", name, input);
    if (!JS_IsException(result)) {
        JSValue json = JS_JSONStringify(ctx, result, JS_UNDEFINED, JS_UNDEFINED);
        JS_FreeValue(ctx, result);
        if (JS_IsUndefined(json)) {
            json = JS_NewString(ctx, "null");
        }
        if (!JS_IsException(json)) {
            size_t len;
            const char *s = JS_ToCStringLen(ctx, &len, json);
            set_string(ret, s, len);
            JS_FreeCString(ctx, s);
            ok = true;
        }
        JS_FreeValue(ctx, json);
    }
    if (!ok)
        model_error(err);
done:
    sandbox_string_free(name);
    sandbox_string_free(input);
    return ok;
}

bool exports_sandbox_train(sandbox_string_t *name, sandbox_string_t *input, sandbox_string_t *err) {
    bool ok = false;
    const char *failure = "the JavaScript interpreter could not start";
    if (!init()) {
        set_string(err, failure, strlen(failure));
        goto done;
    }
    JSValue result = call_model("train", name, input);
    ok = !JS_IsException(result);
    JS_FreeValue(ctx, result);
    if (!ok)
        model_error(err);
done:
    sandbox_string_free(name);
    sandbox_string_free(input);
    return ok;
}

/* Starts the interpreter ahead of any run (src/guest/prebake.rs): 0 once started. */
__attribute__((export_name("sandlot-init"))) int32_t sandlot_init(void) {
    return start() ? 0 : 1;
}
