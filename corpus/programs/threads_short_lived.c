/* N short-lived threads (the argument), 100 at a time, each calling leaf() twice and ending.
 * Every one of them must be in the trace with both calls, however many there are: a tracer
 * that keeps a buffer chunk per thread forever runs out of them after about a thousand. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define TRACED __attribute__((noinline))

enum { BATCH = 100 };

TRACED long leaf(long x) { return x * 3 + 1; }

TRACED void *worker(void *arg) {
    long i = (long)arg;
    return (void *)(leaf(i) + leaf(i + 1));
}

TRACED long spawn_batch(long first) {
    pthread_t t[BATCH];
    long sum = 0;
    for (int i = 0; i < BATCH; i++) pthread_create(&t[i], NULL, worker, (void *)(first + i));
    for (int i = 0; i < BATCH; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (long)r;
    }
    return sum;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : BATCH, sum = 0;
    for (long first = 0; first < n; first += BATCH) sum += spawn_batch(first);
    printf("%ld threads, sum %ld\n", n, sum);
    return 0;
}
