/* Ways a program ends from inside nested calls (the argument): exit3 (exit(3), atexit
 * handlers run, and they are traced too), abort, _exit (nothing runs after it), segv (a
 * write through NULL), kill (SIGKILL sent to itself). The tracer must leave the exit status
 * as it is; a recorder outside the process must keep the trace up to the end, and say in
 * `info` how the program ended. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TRACED __attribute__((noinline))

static volatile int seen;

TRACED int leaf(int x) {
    seen = x;
    return x + 1;
}

TRACED void at_exit(void) { leaf(3); }

TRACED void quit(const char *how) {
    fflush(stdout);
    if (!strcmp(how, "exit3")) exit(3);
    if (!strcmp(how, "abort")) abort();
    if (!strcmp(how, "_exit")) _exit(5);
    if (!strcmp(how, "segv")) *(volatile int *)NULL = 1;
    if (!strcmp(how, "kill")) kill(getpid(), SIGKILL);
}

TRACED void finish(const char *how) {
    printf("ending by %s\n", how);
    quit(how);
}

int main(int argc, char **argv) {
    atexit(at_exit);
    printf("leaf(1) = %d\n", leaf(1));
    finish(argc > 1 ? argv[1] : "exit3");
    return 0;
}
