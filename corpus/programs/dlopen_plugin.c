/* The library dlopen_dlclose.c loads. */
#define TRACED __attribute__((noinline))

TRACED int plugin_inner(int x) { return x * 2; }

TRACED int plugin_entry(int x) { return plugin_inner(x) + plugin_inner(x + 1); }
