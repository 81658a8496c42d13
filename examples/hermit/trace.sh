#!/usr/bin/env bash
# Traces the Hermit demo end to end: builds it (build.sh), boots it under uhyve on KVM while
# `vftrace kvm` records the host's KVM events, writes the symbols of the image into the guest's
# trace on the host (`vftrace sym`), and merges guest functions and host events into one
# timeline (`vftrace merge`).
#
# Usage: examples/hermit/trace.sh [OUT_DIR]      (default: $HERMIT_WORK/traced)
#
# OUT_DIR afterwards (replaced on every run):
#   guest/          the host folder the guest sees as /root/out
#   guest/trace/    the guest's uftrace directory (uftrace replay -d OUT_DIR/guest/trace)
#   guest/report.txt  what the demo computed and the call counts it expects
#   host.kvm        host KVM events (vftrace kvm)
#   merged.json, merged.pftrace   guest functions and host KVM events on one timeline
#   uhyve.log       the guest's console
#
# Environment:
#   HERMIT_WORK     as for build.sh (default: examples/hermit/target)
#   HERMIT_CPUS     vCPUs (default: 2)
#   HERMIT_THREADS  worker threads of the demo (default: 2)
#   HERMIT_TIMEOUT  seconds the traced run may take before it is killed (default: 300)
#   VFTRACE         the vftrace binary (default: built here from tools/cli)
# Needs root (tracefs) and /dev/kvm.
set -euo pipefail

HERMIT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$HERMIT_DIR/../.." && pwd)
WORK=${HERMIT_WORK:-$HERMIT_DIR/target}
OUT=${1:-$WORK/traced}
CPUS=${HERMIT_CPUS:-2}
THREADS=${HERMIT_THREADS:-2}
RUN_TIMEOUT=${HERMIT_TIMEOUT:-300}

die() {
    printf 'trace.sh: error: %s\n' "$*" >&2
    exit 1
}
case ${1:-} in -h | --help)
    sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
(($# <= 1)) || die "one output folder at most (try --help)"
[[ -r /dev/kvm && -w /dev/kvm ]] || die "/dev/kvm is not usable: uhyve needs KVM"
((EUID == 0)) || die "vftrace kvm records through tracefs and needs root"

HERMIT_WORK=$WORK "$HERMIT_DIR/build.sh"
app=$(readlink -f "$WORK/vftrace-hermit-demo")

if [[ -z ${VFTRACE:-} ]]; then
    printf '\n==> vftrace command line (tools/cli)\n' >&2
    (
        unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER
        cargo build --quiet --release --manifest-path "$REPO_DIR/Cargo.toml" -p vftrace-cli \
            --target-dir "$WORK/cli-build"
    )
    VFTRACE=$WORK/cli-build/release/vftrace
fi

printf '\n==> traced run under uhyve (%s vCPUs, %s worker threads) with host KVM events\n' "$CPUS" "$THREADS" >&2
rm -rf "$OUT"
# The guest cannot create folders (mkdir: ENOSYS under uhyve), so the host makes them.
mkdir -p "$OUT/guest/trace"
start=$(date +%s.%N)
# Kernel 0.11 forwards only paths under /root to uhyve. The kernel's bootargs are
# "KERNEL_ARGS -- APP_ARGS"; the first "--" is uhyve's own. VFTRACE_EXE names the image in the
# trace, so that `vftrace sym` below finds where its symbols belong. Both timeouts: a guest that
# faults hangs uhyve, and vftrace kvm must still remove its tracefs instance.
timeout --kill-after=10 $((RUN_TIMEOUT + 20)) \
    "$VFTRACE" kvm --quiet -o "$OUT/host.kvm" -- \
    timeout --kill-after=5 "$RUN_TIMEOUT" \
    uhyve --cpu-count "$CPUS" --memory-size 256MiB --file-mapping "$OUT/guest:/root/out" \
    --env-vars="VFTRACE_EXE=$app" "$app" -- -- \
    --threads "$THREADS" --trace /root/out/trace /root/out/report.txt |
    tee "$OUT/uhyve.log"
awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "    traced run: %.1f s\n", end - start }' >&2
[[ -s $OUT/guest/trace/info ]] || die "the guest wrote no trace (see $OUT/uhyve.log)"

printf '\n==> symbols of the image into the trace, merged timeline\n' >&2
"$VFTRACE" sym "$app" -d "$OUT/guest/trace"
"$VFTRACE" merge --guest "$OUT/guest/trace" --kvm "$OUT/host.kvm" -o "$OUT/merged.json"
"$VFTRACE" merge --guest "$OUT/guest/trace" --kvm "$OUT/host.kvm" -o "$OUT/merged.pftrace" >/dev/null
printf '    trace: %s (%s); merged: %s\n' "$OUT/guest/trace" "$(du -sh "$OUT/guest/trace" | cut -f1)" "$OUT/merged.json" >&2
