/* Values in every register class the ABI returns and passes them in: the tracer's entry hook
 * runs before the arguments are used and its exit hook after the return value is computed,
 * so any register it does not keep changes what the program prints. float and double (xmm0),
 * long double (x87 st0), _Complex double (xmm0:xmm1), __int128 (rax:rdx), small structs
 * (rax:rdx, xmm0:xmm1, mixed), a large struct (memory), a 16-byte vector (xmm0). (32-byte
 * vectors make the caller realign its stack: stack_realign.c.) */
#include <stdio.h>

#define TRACED __attribute__((noinline))

typedef float v4f __attribute__((vector_size(16)));

struct two_longs { long a, b; };
struct two_doubles { double x, y; };
struct mixed { double x; long n; };
struct big { long v[6]; };

TRACED float ret_float(float a, float b) { return a * b + 0.5f; }
TRACED double ret_double(double a, double b, double c, double d, double e, double f, double g,
                         double h) {
    return a - b + c - d + e - f + g - h;
}
TRACED long double ret_long_double(long double a) { return a / 3.0L; }
TRACED _Complex double ret_complex(double re, double im) { return re + im * 1.0i; }
TRACED __int128 ret_int128(long hi, unsigned long lo) { return ((__int128)hi << 64) | lo; }
TRACED struct two_longs ret_two_longs(long a) { return (struct two_longs){a, -a}; }
TRACED struct two_doubles ret_two_doubles(double x) { return (struct two_doubles){x, x / 7}; }
TRACED struct mixed ret_mixed(double x, long n) { return (struct mixed){x * 2, n * 3}; }
TRACED struct big ret_big(long s) {
    struct big b;
    for (int i = 0; i < 6; i++) b.v[i] = s + i * i;
    return b;
}
TRACED v4f ret_v4f(v4f a, v4f b) { return a * b; }

int main(void) {
    printf("float %a\n", ret_float(1.25f, 3.5f));
    printf("double %a\n", ret_double(1.5, 2.25, 3.125, 4.0625, 5.5, 6.75, 7.875, 8.0));
    printf("long double %La\n", ret_long_double(10.0L));
    _Complex double z = ret_complex(1.5, -2.5);
    printf("complex %a %a\n", __real__ z, __imag__ z);
    __int128 w = ret_int128(-3, 0x123456789abcdef0UL);
    printf("int128 %lx %lx\n", (unsigned long)(w >> 64), (unsigned long)w);
    struct two_longs tl = ret_two_longs(42);
    printf("two_longs %ld %ld\n", tl.a, tl.b);
    struct two_doubles td = ret_two_doubles(1.0);
    printf("two_doubles %a %a\n", td.x, td.y);
    struct mixed m = ret_mixed(0.75, 11);
    printf("mixed %a %ld\n", m.x, m.n);
    struct big b = ret_big(100);
    printf("big %ld %ld %ld %ld %ld %ld\n", b.v[0], b.v[1], b.v[2], b.v[3], b.v[4], b.v[5]);
    v4f f = ret_v4f((v4f){1, 2, 3, 4}, (v4f){0.5f, 0.25f, 2, -1});
    printf("v4f %a %a %a %a\n", f[0], f[1], f[2], f[3]);
    return 0;
}
