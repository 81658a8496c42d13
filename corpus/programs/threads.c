/* Four threads, each calling leaf() three times, started and joined by run_threads(). */
#include <pthread.h>
#include <stdio.h>

#define TRACED __attribute__((noinline))

TRACED long leaf(long x) { return x * 3 + 1; }

TRACED void *worker(void *arg) {
    long x = (long)arg;
    for (int i = 0; i < 3; i++) x = leaf(x);
    return (void *)x;
}

TRACED long run_threads(void) {
    pthread_t t[4];
    long sum = 0;
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (long)r;
    }
    return sum;
}

int main(void) {
    printf("sum = %ld\n", run_threads());
    return 0;
}
