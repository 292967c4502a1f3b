/*
 * Lua's errors unwind with setjmp/longjmp, which clang lowers to wasm
 * exceptions (-mllvm -wasm-enable-sjlj). The wasi-libc that comes with Zig
 * has the functions that lowering calls (__wasm_setjmp, __wasm_longjmp, ...)
 * but not the exception tag they throw, which is defined here.
 */
__asm__(".globl __c_longjmp\n.tagtype __c_longjmp i32\n__c_longjmp:\n");
