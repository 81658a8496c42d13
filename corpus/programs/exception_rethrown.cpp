// An exception caught, then rethrown with `throw;` from the handler, and caught again one frame
// further up.
#include <cstdio>
#include <stdexcept>

#define TRACED __attribute__((noinline))

TRACED void note(const char *what) { std::printf("%s\n", what); }

TRACED void thrower() { throw std::runtime_error("boom"); }

TRACED void log_and_rethrow() {
    try {
        thrower();
    } catch (...) {
        note("rethrowing");
        throw;
    }
}

TRACED int outer() {
    try {
        log_and_rethrow();
    } catch (const std::exception &e) {
        note(e.what());
        return 1;
    }
    return 0;
}

TRACED int after(int x) { return x + 1; }

int main() {
    int r = outer();
    std::printf("after(%d) = %d\n", r, after(r));
    return 0;
}
