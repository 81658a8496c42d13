/* Eight children alive at once: each blocks on a pipe until the parent has forked all of them,
 * then works and exits with its number. The parent waits for all and adds the numbers up. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define TRACED __attribute__((noinline))

enum { CHILDREN = 8 };

static volatile int seen;

TRACED int leaf(int x) {
    seen = x;
    return x + 1;
}

TRACED int child_work(int i) { return leaf(i) + leaf(i + 1) + leaf(i + 2); }

TRACED void report(int sum) { printf("children: %d, sum of exit codes %d\n", CHILDREN, sum); }

int main(void) {
    int go[2];
    if (pipe(go) != 0) return 1;
    fflush(stdout);
    for (int i = 1; i <= CHILDREN; i++) {
        if (fork() == 0) {
            char c;
            close(go[1]);
            (void)!read(go[0], &c, 1); /* returns 0 once the parent closes its end */
            seen = child_work(i);
            exit(i);
        }
    }
    close(go[0]);
    close(go[1]);
    int sum = 0, status;
    for (int i = 0; i < CHILDREN; i++) {
        wait(&status);
        sum += WEXITSTATUS(status);
    }
    report(sum);
    return 0;
}
