/* The instrumented shared library of shared_library.c. */
#define TRACED __attribute__((noinline))

TRACED int lib_inner(int x) { return x + 1; }

TRACED int lib_outer(int x) { return lib_inner(x) * lib_inner(x + 1); }

TRACED int lib_apply(int (*fn)(int), int x) { return fn(lib_inner(x)); }
