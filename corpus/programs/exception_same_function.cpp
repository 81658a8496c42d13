// A throw caught in the function that threw it: the unwinder never leaves that frame.
#include <cstdio>
#include <stdexcept>

#define TRACED __attribute__((noinline))

TRACED int fallback() { return 0; }

TRACED int parse(int x) {
    try {
        if (x < 0) throw std::invalid_argument("negative");
        return x;
    } catch (const std::invalid_argument &) {
        return fallback();
    }
}

int main() {
    int a = parse(-5);
    int b = parse(7);
    std::printf("parse(-5) = %d, parse(7) = %d\n", a, b);
    return 0;
}
