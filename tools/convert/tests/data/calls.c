/* Traced by the conversion tests: nested calls, recursion, a library call and a second thread. */
#include <pthread.h>
#include <unistd.h>

static volatile int sink;

__attribute__((noinline)) void leaf(int i) { sink += i; }

__attribute__((noinline)) void middle(int n) {
    for (int i = 0; i < n; i++)
        leaf(i);
}

__attribute__((noinline)) int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

/* Long enough that its duration is printed in milliseconds by uftrace replay. */
__attribute__((noinline)) void slow(void) { usleep(2000); }

static void *worker(void *arg) {
    (void)arg;
    middle(3);
    fib(5);
    return 0;
}

int main(void) {
    pthread_t t;
    middle(2);
    pthread_create(&t, 0, worker, 0);
    pthread_join(t, 0);
    fib(4);
    slow();
    return 0;
}
