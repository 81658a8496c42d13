// An exception thrown six frames below its handler. The frames at even depths destroy an object
// as it passes (they have a cleanup); the frames at odd depths have nothing to do, so the
// unwinder leaves them without running any of their code. All of them end.
#include <cstdio>
#include <stdexcept>

#define TRACED __attribute__((noinline))

struct Guard {
    int id;
    TRACED explicit Guard(int i) : id(i) {}
    TRACED ~Guard() { std::printf("~Guard %d\n", id); }
};

static volatile int seen;

TRACED void dive(int n);

TRACED void dive_plain(int n) {
    seen = n;
    dive(n - 1);
}

TRACED void dive(int n) {
    if (n == 0) throw std::runtime_error("from the bottom");
    Guard g(n);
    dive_plain(n - 1);
}

TRACED void handled(const char *what) { std::printf("caught: %s\n", what); }

TRACED int top(int depth) {
    try {
        dive(depth);
    } catch (const std::exception &e) {
        handled(e.what());
        return depth;
    }
    return -1;
}

int main() {
    int a = top(6);
    int b = top(2);
    std::printf("top(6) = %d, top(2) = %d\n", a, b);
    return 0;
}
