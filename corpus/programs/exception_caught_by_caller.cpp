// An exception thrown two frames down and caught by the caller, with an object to destroy in
// each frame it leaves: the destructors run in those frames while the exception passes, the
// frames end, and the handler runs in the catching function. Done twice.
#include <cstdio>
#include <stdexcept>

#define TRACED __attribute__((noinline))

struct Guard {
    int id;
    TRACED explicit Guard(int i) : id(i) {}
    TRACED ~Guard() { std::printf("~Guard %d\n", id); }
};

TRACED void thrower(int n) {
    Guard g(n * 10 + 2);
    if (n > 0) throw std::runtime_error("boom");
}

TRACED void middle(int n) {
    Guard g(n * 10 + 1);
    thrower(n);
}

TRACED void handled(const char *what) { std::printf("caught %s\n", what); }

TRACED int catcher(int n) {
    try {
        middle(n);
    } catch (const std::exception &e) {
        handled(e.what());
        return 1;
    }
    return 0;
}

TRACED int after(int x) { return x + 1; }

int main() {
    int r = catcher(1);
    r = after(r);
    r += catcher(2);
    std::printf("r = %d\n", r);
    return 0;
}
