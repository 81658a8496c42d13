/* A child process (the argument says how): "fork" (the child calls child_work and returns from
 * main), "fork_exec" (the child calls exec_self, which execs this program again and never
 * returns), "vfork_exec" (the vfork child execs this program again straight from main, calling
 * nothing traced before: it borrows the parent's memory and stack until then). The exec'd
 * program (argument "exec-child") calls as_exec_child. The parent waits for the child, then
 * calls a. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TRACED __attribute__((noinline))

static volatile int seen;

TRACED int c(int x) {
    seen = x;
    return x + 1;
}
TRACED int b(int x) { return c(x) * 2; }
TRACED int a(int x) { return b(x) + 1; }

TRACED int child_work(void) { return a(1); }

TRACED void exec_self(void) {
    execl("/proc/self/exe", "forks", "exec-child", (char *)NULL);
    _exit(127);
}

TRACED int as_exec_child(void) { return a(3); }

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "fork";
    if (!strcmp(how, "exec-child")) {
        printf("exec child: %d\n", as_exec_child());
        return 0;
    }
    int exec = !strcmp(how, "fork_exec");
    fflush(stdout);
    pid_t pid;
    if (!strcmp(how, "vfork_exec")) {
        pid = vfork();
        if (pid == 0) {
            execl("/proc/self/exe", "forks", "exec-child", (char *)NULL);
            _exit(127);
        }
    } else {
        pid = fork();
        if (pid == 0) {
            if (exec) exec_self();
            printf("child: %d\n", child_work());
            return 0;
        }
    }
    int status;
    waitpid(pid, &status, 0);
    printf("parent: %d, child exited with %d\n", a(2), WEXITSTATUS(status));
    return 0;
}
