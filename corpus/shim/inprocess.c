/* The in-process tracing mode: linked (with libvftrace.a) into an unmodified program, it starts
 * tracing before any constructor of the program runs and writes the trace after every
 * destructor of the program, into the directory named by VFTRACE_CORPUS_DIR.
 *
 * Constructors with priority 101 run before the default ones (C++ static constructors
 * included); destructors with priority 101 run after the default ones and after the atexit
 * handlers registered while the program ran (C++ static destructors), because glibc registers
 * the ELF destructors first.
 */
#include <stdio.h>
#include <stdlib.h>

#include "vftrace.h"

__attribute__((constructor(101))) static void corpus_trace_start(void) {
    if (!getenv("VFTRACE_CORPUS_DIR")) return;
    if (vftrace_init(256 << 20, VFTRACE_STOP_WHEN_FULL) != 0) return;
    vftrace_enable();
}

__attribute__((destructor(101))) static void corpus_trace_dump(void) {
    const char *dir = getenv("VFTRACE_CORPUS_DIR");
    /* vftrace_dump prints the summary, or why it failed (the test then finds no trace). */
    if (dir) vftrace_dump(dir);
}
