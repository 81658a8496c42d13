/* main with a 32-byte vector local: gcc realigns main's stack through a DRAP register. The
 * prologue saves the incoming stack pointer, aligns the stack and pushes a copy of the return
 * address above the new frame pointer, where mcount looks for it; main returns through the
 * original, which nobody hooked. (Other functions are realigned after the frame pointer is
 * set, which is harmless.) main still returns, and its exit belongs in the trace. */
#include <stdio.h>

#define TRACED __attribute__((noinline))

typedef double v4d __attribute__((vector_size(32)));

TRACED long leaf(long x) { return x * 3 + 1; }

TRACED long after(void) { return leaf(9); }

int main(void) {
    v4d v = {1.5, -2.5, 3.25, 1e300};
    __asm__ volatile("" : : "m"(v));
    printf("v %a %a\n", v[0] + v[1], v[2] * v[3]);
    printf("leaf(2) = %ld\n", leaf(2));
    printf("after() = %ld\n", after());
    return 0;
}
