/* vftrace: function tracing for programs compiled with gcc -pg (or clang -pg).
 *
 * Compile the code to trace with -pg, link the program normally (not with -pg, so that
 * gprof's gcrt1.o is not used) against libvftrace.a, then:
 *
 *     vftrace_init(64 << 20, VFTRACE_STOP_WHEN_FULL);
 *     vftrace_enable();
 *     ... work ...
 *     vftrace_dump("vftrace.data");   // a uftrace directory: uftrace replay -d vftrace.data
 */
#ifndef VFTRACE_H
#define VFTRACE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum vftrace_mode {
    VFTRACE_STOP_WHEN_FULL = 0, /* keep the first events, count the rest as lost */
    VFTRACE_RING = 1,           /* keep the newest events */
};

/* Allocates a trace buffer shared by all threads. Returns 0, or -1 (message on stderr). */
int vftrace_init(size_t capacity_bytes, int mode);
/* Starts / stops tracing for all threads. Calls already traced still record their exit. */
void vftrace_enable(void);
void vftrace_disable(void);
/* Stops tracing and writes a uftrace directory. Returns 0, or -1 (message on stderr). */
int vftrace_dump(const char *dir);

#ifdef __cplusplus
}
#endif

#endif
