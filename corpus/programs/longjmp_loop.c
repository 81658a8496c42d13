/* 200 longjmps back into the same function, each out of 10 frames: 2000 frames die while the
 * function that called setjmp stays, twice the depth of a 1024-frame shadow stack. The memory
 * of the dead frames is not overwritten in between, so it still holds whatever the tracer
 * left there. Every jump, and the calls after the last one, must be in the trace. */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#define TRACED __attribute__((noinline))

enum { JUMPS = 200 };

static jmp_buf env;
static volatile int seen;

TRACED void descend(int n) {
    char pad[64];
    memset(pad, n, sizeof pad);
    seen = pad[n % 64];
    if (n == 0) longjmp(env, 1);
    descend(n - 1);
}

TRACED int leaf(int x) {
    seen = x;
    return x + 1;
}

TRACED int after_loop(int jumps) { return leaf(jumps) + leaf(1) + leaf(2); }

TRACED int jumps(void) {
    volatile int done = 0;
    if (setjmp(env) != 0) done++;
    if (done < JUMPS) descend(9);
    return after_loop(done);
}

int main(void) {
    printf("jumps() = %d\n", jumps());
    return 0;
}
