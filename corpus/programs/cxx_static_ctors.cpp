// C++ objects with static storage: a global constructed before main and destroyed after it, a
// function-local static constructed at its first use, both destroyed after main in the reverse
// order of their construction (through __cxa_atexit).
#include <cstdio>

#define TRACED __attribute__((noinline))

TRACED void note(const char *what, int id) { std::printf("%s %d\n", what, id); }

struct Registry {
    int id;
    TRACED explicit Registry(int i) : id(i) { note("construct", id); }
    TRACED ~Registry() { note("destroy", id); }
};

Registry global_registry(1);

TRACED Registry &local_registry() {
    static Registry r(2);
    return r;
}

int main() {
    note("main", global_registry.id);
    note("main", local_registry().id);
    note("main", local_registry().id);
    return 0;
}
