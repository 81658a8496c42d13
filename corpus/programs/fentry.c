/* gcc -pg -mfentry: every function calls __fentry__ as its very first instruction, before the
 * prologue (so the return address is at the stack pointer, not above a frame pointer). */
#include <stdio.h>

#define TRACED __attribute__((noinline))

static volatile int seen;

TRACED int leaf(int x) {
    seen = x;
    return x + 1;
}

TRACED int c(int x) { return leaf(x) * 2; }

TRACED int b(int x) { return c(x) + leaf(x); }

TRACED int a(int x) {
    int sum = 0;
    for (int i = 0; i < 3; i++) sum += b(x + i);
    return sum;
}

int main(void) {
    printf("a(1) = %d\n", a(1));
    return 0;
}
