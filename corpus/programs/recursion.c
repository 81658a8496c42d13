/* Recursion N deep (the argument). Deeper than the shadow stack (1024 frames, uftrace's limit
 * too: main and 1023 levels), the calls that cannot be traced must be counted and reported,
 * and tracing must go on once the recursion returns. */
#include <stdio.h>
#include <stdlib.h>

#define TRACED __attribute__((noinline))

static volatile int seen;

TRACED int recurse(int n) {
    if (n == 0) return 0;
    return recurse(n - 1) + 1;
}

TRACED int leaf(int x) {
    seen = x;
    return x + 1;
}

TRACED int after(void) { return leaf(7); }

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 10;
    printf("recurse(%d) = %d\n", depth - 1, recurse(depth - 1));
    printf("after() = %d\n", after());
    return 0;
}
