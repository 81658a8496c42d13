/* A SIGUSR1 handler, raised four frames down, that runs on the thread's stack ("stack") or on
 * an alternate signal stack ("altstack", sigaltstack), and either returns ("return") or leaves
 * by siglongjmp ("jump"). The handler nests under the frame the signal interrupted. When it
 * returns, everything goes on as before. When it jumps, its frame and the four frames below it
 * end at the jump (on the alternate stack, the handler's frame is on another stack than
 * theirs), and what comes after nests under the function that called sigsetjmp. Twice. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRACED __attribute__((noinline))

static sigjmp_buf env;
static int jump;
static volatile int seen;

TRACED void in_handler(int sig) { seen = sig; }

TRACED void on_usr1(int sig) {
    in_handler(sig);
    if (jump) siglongjmp(env, 1);
}

TRACED void descend(int n) {
    if (n == 0) raise(SIGUSR1);
    else descend(n - 1);
    seen = n;
}

TRACED int leaf(int x) {
    seen = x;
    return x + 1;
}

TRACED int after_jump(void) { return leaf(1); }

TRACED int with_signal(void) {
    if (sigsetjmp(env, 1) == 0) {
        descend(3);
        return 0;
    }
    return after_jump();
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    jump = !strcmp(argv[1], "jump");
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    if (!strcmp(argv[2], "altstack")) {
        stack_t ss = {0};
        ss.ss_size = 1 << 16;
        ss.ss_sp = malloc(ss.ss_size);
        sigaltstack(&ss, NULL);
        sa.sa_flags = SA_ONSTACK;
    }
    sigaction(SIGUSR1, &sa, NULL);
    printf("first: %d\n", with_signal());
    printf("second: %d\n", with_signal());
    printf("leaf(5) = %d\n", leaf(5));
    return 0;
}
