/* Stack frames whose size is only known at run time (alloca and variable-length arrays): the
 * stack pointer moves after the prologue, the frame pointer does not. */
#include <alloca.h>
#include <stdio.h>
#include <string.h>

#define TRACED __attribute__((noinline))

TRACED long sum(const unsigned char *p, int n) {
    long s = 0;
    for (int i = 0; i < n; i++) s += p[i];
    return s;
}

TRACED long with_alloca(int n) {
    unsigned char *p = alloca(n);
    memset(p, 3, n);
    long s = sum(p, n);
    unsigned char *q = alloca(n * 2);
    memset(q, 1, n * 2);
    return s + sum(q, n * 2);
}

TRACED long with_vla(int n) {
    unsigned char v[n];
    memset(v, 5, n);
    return sum(v, n) + with_alloca(n / 2);
}

int main(void) {
    printf("with_alloca(1000) = %ld\n", with_alloca(1000));
    printf("with_vla(4001) = %ld\n", with_vla(4001));
    return 0;
}
