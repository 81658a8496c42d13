/* Sibling calls: at -O2, gcc compiles `return b(...)` at the end of a() as a jump to b(), which
 * then returns straight to a()'s caller (the test checks the disassembly: a and b reach their
 * callees by jmp). The calls still happened: main called a, a called b, b called c.
 */
#include <stdio.h>

#define TRACED __attribute__((noinline, noclone))

static volatile int seen;

TRACED int c(int x) {
    seen = x;
    return x * 3;
}

TRACED int b(int x) {
    seen = x;
    return c(x + 1);
}

TRACED int a(int x) {
    seen = x;
    return b(x * 2);
}

TRACED int after(int x) {
    seen = x;
    return x - 1;
}

int main(void) {
    int r = a(5);
    printf("a(5) = %d\n", r);
    printf("after(%d) = %d\n", r, after(r));
    return 0;
}
