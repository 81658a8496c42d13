/* An instrumented library (dlopen_plugin.c) loaded with dlopen, called, and closed again
 * before the program ends: its functions must still have their names in the trace. */
#include <dlfcn.h>
#include <stdio.h>

#define TRACED __attribute__((noinline))

static volatile int seen;

TRACED int after(int x) {
    seen = x;
    return x + 1;
}

TRACED int load_and_call(const char *path) {
    void *lib = dlopen(path, RTLD_NOW);
    if (!lib) {
        printf("dlopen: %s\n", dlerror());
        return -1;
    }
    int (*entry)(int) = (int (*)(int))dlsym(lib, "plugin_entry");
    int r = entry(4);
    dlclose(lib);
    return r;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int r = load_and_call(argv[1]);
    printf("plugin_entry(4) = %d, after = %d\n", r, after(r));
    return 0;
}
