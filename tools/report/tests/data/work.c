/* Recorded by `uftrace record` in the report tests: nested calls, recursion (mutual too),
 * a slow function (the flame graph's hot spot) and a second thread. */
#include <pthread.h>
#include <unistd.h>

static volatile int sink;

__attribute__((noinline)) void leaf(int i) { sink += i; }

__attribute__((noinline)) void middle(int n) {
    for (int i = 0; i < n; i++)
        leaf(i);
}

__attribute__((noinline)) int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int odd(int n);
__attribute__((noinline)) int even(int n) { return n == 0 ? 1 : odd(n - 1); }
__attribute__((noinline)) int odd(int n) { return n == 0 ? 0 : even(n - 1); }

__attribute__((noinline)) void slow(void) { usleep(3000); }

static void *worker(void *arg) {
    (void)arg;
    middle(3);
    fib(6);
    even(5);
    return 0;
}

int main(void) {
    pthread_t t;
    middle(2);
    pthread_create(&t, 0, worker, 0);
    pthread_join(t, 0);
    fib(5);
    slow();
    even(4);
    return 0;
}
