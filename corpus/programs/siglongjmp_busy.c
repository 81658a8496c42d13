/* A fast timer signal (every 100 us) against a tight loop of traced calls: most signals land
 * while the tracer itself runs (mcount or the return trampoline), and the handler leaves by
 * siglongjmp, never returning there. After 2000 such jumps the calls must still be traced, and
 * nest under main.
 *
 * Which calls of spin/tiny/on_alarm are recorded depends on where each signal lands, so the
 * expected trees leave them out (replay -N); what must hold is the rest.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/time.h>

#define TRACED __attribute__((noinline))

enum { JUMPS = 2000 };

static sigjmp_buf env;
static volatile sig_atomic_t jumps;
static volatile int seen;

TRACED unsigned long tiny(unsigned long x) {
    __asm__ volatile("" : "+r"(x));
    return x + 1;
}

TRACED void spin(void) {
    unsigned long x = 0;
    for (;;) x = tiny(x);
}

TRACED void on_alarm(int sig) {
    (void)sig;
    jumps++;
    siglongjmp(env, 1);
}

TRACED int leaf(int x) {
    seen = x;
    return x + 1;
}

TRACED int after(void) { return leaf(1) + leaf(2) + leaf(3); }

TRACED void timer(long usec) {
    struct itimerval it = {{0, usec}, {0, usec}};
    setitimer(ITIMER_REAL, &it, NULL);
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    /* The handler may only jump once env is set; every jump comes back here with 1. */
    if (sigsetjmp(env, 1) == 0) timer(100);
    if (jumps < JUMPS) spin();
    /* No jump after this point: a signal already on its way stays pending. */
    sigset_t alarm;
    sigemptyset(&alarm);
    sigaddset(&alarm, SIGALRM);
    sigprocmask(SIG_BLOCK, &alarm, NULL);
    timer(0);
    printf("at least %d jumps: %s\n", JUMPS, jumps >= JUMPS ? "yes" : "no");
    printf("after() = %d\n", after());
    return 0;
}
