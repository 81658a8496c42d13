/* Calls into an instrumented shared library linked with the program (shared_library_lib.c),
 * which calls back into the program. */
#include <stdio.h>

#define TRACED __attribute__((noinline))

int lib_outer(int x);
int lib_apply(int (*fn)(int), int x);

TRACED int in_program(int x) { return x * 10; }

int main(void) {
    printf("lib_outer(2) = %d\n", lib_outer(2));
    printf("lib_apply(in_program, 3) = %d\n", lib_apply(in_program, 3));
    return 0;
}
