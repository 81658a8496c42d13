/* Two coroutines (makecontext/swapcontext) on stacks of their own, switching to each other
 * from inside traced functions, then run to their end one after the other.
 *
 * What really happens, in order: main and run start on the main stack; coro_a starts on stack
 * a and calls step (a0); coro_b starts on stack b (b0); back in coro_a (a1), in coro_b (b1);
 * coro_a returns (to run, through uc_link); run calls step (m0) and switches to coro_b, which
 * returns (to run); run calls step (m1) and returns; main calls step (m2).
 */
#include <stdio.h>
#include <ucontext.h>

#define TRACED __attribute__((noinline))

static ucontext_t main_ctx, a_ctx, b_ctx;
static char stack_a[1 << 16], stack_b[1 << 16];

TRACED void step(int who, int i) { printf("%c%d\n", who, i); }

TRACED void coro_a(void) {
    for (int i = 0; i < 2; i++) {
        step('a', i);
        swapcontext(&a_ctx, &b_ctx);
    }
}

TRACED void coro_b(void) {
    for (int i = 0; i < 2; i++) {
        step('b', i);
        swapcontext(&b_ctx, &a_ctx);
    }
}

TRACED void prepare(ucontext_t *ctx, char *stack, size_t size, void (*fn)(void)) {
    getcontext(ctx);
    ctx->uc_stack.ss_sp = stack;
    ctx->uc_stack.ss_size = size;
    ctx->uc_link = &main_ctx;
    makecontext(ctx, fn, 0);
}

TRACED void run(void) {
    prepare(&a_ctx, stack_a, sizeof stack_a, coro_a);
    prepare(&b_ctx, stack_b, sizeof stack_b, coro_b);
    swapcontext(&main_ctx, &a_ctx);
    step('m', 0);
    swapcontext(&main_ctx, &b_ctx);
    step('m', 1);
}

int main(void) {
    run();
    step('m', 2);
    return 0;
}
