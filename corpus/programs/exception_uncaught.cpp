// An exception nobody catches: std::terminate, abort, exit status 134, traced or not. (The
// output is flushed first: what is in stdio's buffer dies with the process.)
#include <cstdio>
#include <stdexcept>

#define TRACED __attribute__((noinline))

struct Guard {
    TRACED ~Guard() { std::printf("never printed: no unwinding without a handler\n"); }
};

TRACED void thrower() {
    Guard g;
    throw std::runtime_error("nobody catches this");
}

TRACED void run() {
    std::printf("throwing\n");
    std::fflush(stdout);
    thrower();
}

int main() {
    run();
    return 0;
}
