#!/bin/sh
# Builds the example unikernel: target/x86_64-unknown-none/release/guest (an ELF with a PVH note).
#
#   examples/unikernel/build.sh [--no-instrument]
#
# Only the kernel crate (vftrace-unikernel) is instrumented; its dependencies (the platform
# crate, the vftrace frontend and the backend staticlib) are not: `cargo rustc` passes the flags
# after `--` to the final crate only. --no-instrument leaves mcount out but keeps the frame
# pointers: the guest a sampling profiler (`vftrace profile`) walks without any tracer.
set -eu
cd "$(dirname "$0")"
# Legacy symbol mangling: uftrace 0.13 demangles `_ZN...E` names but not v0 (`_R...`) ones.
flags="-Cforce-frame-pointers=yes -Zunstable-options -Csymbol-mangling-version=legacy"
if [ "${1:-}" != "--no-instrument" ]; then
    flags="-Zinstrument-mcount $flags"
fi
# RUSTC_BOOTSTRAP=1 is needed only for `-Z instrument-mcount` and the legacy mangling switch
# (unstable rustc flags); the rest of the build uses stable features.
RUSTC_BOOTSTRAP=1 exec cargo rustc --release --bin guest --target x86_64-unknown-none -- $flags
