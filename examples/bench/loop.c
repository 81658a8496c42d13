/* The mcount benchmark's loop in C: `loop N [THREADS]` calls a tiny function N times (in each
 * of THREADS threads at once) and prints, per thread, nanoseconds per iteration by the wall
 * clock and by the thread's CPU clock. scripts/bench-mcount builds it three ways:
 *
 *   gcc -O1 loop.c                          not instrumented
 *   gcc -O1 -pg loop.c                      glibc's mcount, for `uftrace record`
 *   gcc -O1 -pg -DWITH_VFTRACE loop.c libvftrace.a   traced by vftrace (trace dumped to $VFTRACE_DIR)
 *
 * `tiny` and `call_loop` are the same as in examples/rust/src/main.rs: black_box() here does
 * what Rust's std::hint::black_box does (the value goes through a stack slot the compiler must
 * assume is read).
 *
 * With BENCH_PERF_CTL=CTL_FIFO,ACK_FIFO (perf stat --control fifo:... -D -1), a one-thread run
 * enables perf's counters just around the loop (not the tracer's setup or dump).
 *
 * With BENCH_RATE=R, each thread makes its N calls at R calls per second (in slices of 1024,
 * sleeping between them), so that scripts/bench-record can offer the recorder a given rate.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef WITH_VFTRACE
#include "vftrace.h"
#endif

#define NOINLINE __attribute__((noinline))

static inline unsigned long black_box(unsigned long x) {
    __asm__ volatile("" : : "r"(&x) : "memory");
    return x;
}

NOINLINE unsigned long tiny(unsigned long x) { return black_box(x + 1); }

NOINLINE unsigned long call_loop(unsigned long n) {
    unsigned long acc = 0;
    for (unsigned long i = 0; i < n; i++) acc = tiny(acc ^ i);
    return acc;
}

/* Not traced: paced_loop calls it while it waits, and its records would blur the count. */
__attribute__((no_instrument_function)) static double clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static unsigned long calls;
static double rate; /* calls per second per thread, 0: as fast as possible */
static pthread_barrier_t start_line;

/* The loop at `rate` calls per second: slices of 1024 calls, each started on schedule. */
static unsigned long paced_loop(unsigned long n) {
    unsigned long acc = 0, done = 0;
    double start = clock_ns(CLOCK_MONOTONIC);
    while (done < n) {
        unsigned long slice = n - done < 1024 ? n - done : 1024;
        acc ^= call_loop(slice);
        done += slice;
        /* Sleep, not spin, until the next slice is due: the recorder needs the CPU too. */
        double due = start + done * 1e9 / rate;
        if (clock_ns(CLOCK_MONOTONIC) < due) {
            struct timespec ts = {(time_t)(due / 1e9), (long)(due - (double)(time_t)(due / 1e9) * 1e9)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
    }
    return acc;
}

struct result {
    double wall_ns, cpu_ns;
    unsigned long acc;
};

static void *run(void *out) {
    struct result *r = out;
    pthread_barrier_wait(&start_line);
    double wall = clock_ns(CLOCK_MONOTONIC), cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    r->acc = rate > 0 ? paced_loop(calls) : call_loop(calls);
    r->cpu_ns = (clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu) / calls;
    r->wall_ns = (clock_ns(CLOCK_MONOTONIC) - wall) / calls;
    return NULL;
}

/* Sends COMMAND to perf stat's control fifo and waits for its acknowledgement. */
static void perf_control(const char *command) {
    const char *fifos = getenv("BENCH_PERF_CTL");
    if (!fifos) return;
    char ctl[4096];
    const char *comma = strchr(fifos, ',');
    if (!comma || (size_t)(comma - fifos) >= sizeof ctl) {
        fprintf(stderr, "BENCH_PERF_CTL must be CTL_FIFO,ACK_FIFO\n");
        exit(1);
    }
    memcpy(ctl, fifos, comma - fifos);
    ctl[comma - fifos] = 0;
    FILE *c = fopen(ctl, "w"), *a = fopen(comma + 1, "r");
    char reply[8];
    if (!c || !a || fprintf(c, "%s\n", command) < 0 || fflush(c) || !fgets(reply, sizeof reply, a)) {
        fprintf(stderr, "perf control fifos %s: failed\n", fifos);
        exit(1);
    }
    fclose(c);
    fclose(a);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s N [THREADS]\n", argv[0]);
        return 2;
    }
    calls = strtoul(argv[1], NULL, 10);
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    const char *paced = getenv("BENCH_RATE");
    rate = paced ? strtod(paced, NULL) : 0;
    if (calls == 0 || threads < 1 || threads > 64) {
        fprintf(stderr, "N must be > 0 and THREADS 1..64\n");
        return 2;
    }
#ifdef WITH_VFTRACE
    /* Two 16-byte records per call, plus room for each thread's partly used last chunk. */
    if (vftrace_init((2 * calls * threads + 65536) * 16 + (16 << 20), VFTRACE_STOP_WHEN_FULL) != 0)
        return 1;
    vftrace_enable();
#endif
    pthread_t t[64];
    struct result r[64];
    pthread_barrier_init(&start_line, NULL, threads);
    for (int i = 1; i < threads; i++) pthread_create(&t[i], NULL, run, &r[i]);
    if (threads == 1) perf_control("enable");
    run(&r[0]);
    if (threads == 1) perf_control("disable");
    for (int i = 1; i < threads; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < threads; i++)
        printf("thread %d: %lu calls, %.3f ns per iteration (wall), %.3f ns (thread cpu) (acc %lu)\n",
               i, calls, r[i].wall_ns, r[i].cpu_ns, r[i].acc);
#ifdef WITH_VFTRACE
    const char *dir = getenv("VFTRACE_DIR");
    return vftrace_dump(dir ? dir : "vftrace.data") == 0 ? 0 : 1;
#else
    return 0;
#endif
}
