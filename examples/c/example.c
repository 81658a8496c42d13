/* A C program traced by vftrace. Compile the traced code with -pg, link normally:
 *
 *   gcc -O1 -pg -c example.c && gcc example.o libvftrace.a -lpthread -ldl -lm -o example
 *   ./example demo vftrace.data && uftrace replay -d vftrace.data
 *
 * Scenarios: demo (nested calls, recursion, a 10 ms sleep, four threads), threads N M,
 * loop N (the benchmark). Each takes the output directory as its last argument.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vftrace.h"

#define NOINLINE __attribute__((noinline))

NOINLINE static unsigned long fib(unsigned long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

NOINLINE static int less(int a, int b) { return a < b; }

NOINLINE static void insertion_sort(int *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && less(v[j], v[j - 1]); j--) {
            int t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

NOINLINE static void sleep_10ms(void) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

NOINLINE static unsigned long leaf(unsigned long x) {
    unsigned long r = x * 2654435761u >> 7;
    __asm__ volatile("" : "+r"(r));
    return r;
}

static unsigned long calls_per_thread;

NOINLINE static void *worker(void *arg) {
    unsigned long acc = 0;
    for (unsigned long i = 0; i < calls_per_thread; i++) acc ^= leaf(i);
    return (void *)acc;
}

NOINLINE static void run_threads(int n, unsigned long calls) {
    pthread_t t[64];
    calls_per_thread = calls;
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

NOINLINE static void demo(void) {
    int v[] = {5, 3, 4, 1, 2};
    insertion_sort(v, 5);
    if (v[0] != 1 || v[4] != 5 || fib(5) != 5) abort();
    sleep_10ms();
    run_threads(4, 3);
}

NOINLINE static unsigned long tiny(unsigned long x) {
    __asm__ volatile("" : "+r"(x));
    return x + 1;
}

NOINLINE static unsigned long call_loop(unsigned long n) {
    unsigned long acc = 0;
    for (unsigned long i = 0; i < n; i++) acc = tiny(acc ^ i);
    return acc;
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s demo DIR | threads N M DIR | loop N DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[argc - 1];
    if (vftrace_init(256 << 20, VFTRACE_STOP_WHEN_FULL) != 0) return 1;
    vftrace_enable();
    if (!strcmp(argv[1], "demo")) {
        demo();
    } else if (!strcmp(argv[1], "threads") && argc == 5) {
        run_threads(atoi(argv[2]), strtoul(argv[3], NULL, 10));
    } else if (!strcmp(argv[1], "loop") && argc == 4) {
        unsigned long n = strtoul(argv[2], NULL, 10);
        double t0 = now_ns();
        unsigned long acc = call_loop(n);
        printf("loop: %lu calls, %.2f ns per iteration (acc %lu)\n", n, (now_ns() - t0) / n, acc);
    } else {
        fprintf(stderr, "unknown scenario %s\n", argv[1]);
        return 2;
    }
    return vftrace_dump(dir) == 0 ? 0 : 1;
}
