/* longjmp out of a 101-deep recursion: the skipped frames end at the jump, and what the
 * function that called setjmp does next nests under it, not under the dead frames. A second,
 * shallow jump afterwards must be traced the same way. */
#include <setjmp.h>
#include <stdio.h>

#define TRACED __attribute__((noinline))

static jmp_buf env;
static volatile int seen;

TRACED void descend(int n) {
    if (n == 0) longjmp(env, 1);
    descend(n - 1);
    seen = n;
}

TRACED int leaf(int x) {
    seen = x;
    return x + 1;
}

TRACED int after_jump(int x) { return leaf(x) + leaf(x + 1); }

TRACED int jump_from(int depth) {
    if (setjmp(env) == 0) {
        descend(depth);
        return -1;
    }
    return after_jump(depth);
}

TRACED int later(void) { return leaf(10); }

int main(void) {
    printf("jump_from(100) = %d\n", jump_from(100));
    printf("later() = %d\n", later());
    printf("jump_from(3) = %d\n", jump_from(3));
    return 0;
}
