/* Variadic functions: %al tells the callee how many vector registers hold arguments, and the
 * doubles arrive in xmm0-7; the tracer's entry hook runs before va_start reads them. */
#include <stdarg.h>
#include <stdio.h>

#define TRACED __attribute__((noinline))

TRACED double sum_doubles(int n, ...) {
    va_list ap;
    va_start(ap, n);
    double s = 0;
    for (int i = 0; i < n; i++) s += va_arg(ap, double);
    va_end(ap);
    return s;
}

TRACED long sum_mixed(int n, ...) {
    va_list ap;
    va_start(ap, n);
    long s = 0;
    for (int i = 0; i < n; i++) {
        s += va_arg(ap, int);
        s += (long)(va_arg(ap, double) * 1000);
    }
    va_end(ap);
    return s;
}

TRACED int format_into(char *buf, size_t size, const char *fmt, va_list ap) {
    return vsnprintf(buf, size, fmt, ap);
}

TRACED int format(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = format_into(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int main(void) {
    printf("sum_doubles %a\n", sum_doubles(9, 0.5, 1.25, 2.0, 3.5, 4.75, 5.0, 6.125, 7.5, 8.25));
    printf("sum_mixed %ld\n", sum_mixed(5, 1, 0.001, 2, 0.25, 3, 1.5, 4, 2.125, 5, 1e3));
    char buf[128];
    int n = format(buf, sizeof buf, "%d %s %.3f %c %lx", -7, "str", 3.14159, 'z', 0xfeedUL);
    printf("format %d [%s]\n", n, buf);
    return 0;
}
