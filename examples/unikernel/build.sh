#!/bin/sh
# Builds the example unikernel: target/x86_64-unknown-none/release/guest (an ELF with a PVH note).
#
#   examples/unikernel/build.sh [--no-instrument]
#
# Only the kernel crate (vftrace-unikernel) is instrumented; its dependencies (the platform
# crate, the vftrace frontend and the backend staticlib) are not: `cargo rustc` passes the flags
# after `--` to the final crate only.
set -eu
cd "$(dirname "$0")"
# Legacy symbol mangling: uftrace 0.13 demangles `_ZN...E` names but not v0 (`_R...`) ones.
instrument="-Zinstrument-mcount -Cforce-frame-pointers=yes -Zunstable-options -Csymbol-mangling-version=legacy"
if [ "${1:-}" = "--no-instrument" ]; then
    instrument=""
fi
# RUSTC_BOOTSTRAP=1 is needed only for `-Z instrument-mcount` and the legacy mangling switch
# (unstable rustc flags); the rest of the build uses stable features.
RUSTC_BOOTSTRAP=1 exec cargo rustc --release --bin guest --target x86_64-unknown-none -- $instrument
