#!/usr/bin/env bash
# Builds the instrumented Hermit kernel (hermit-kernel 0.11.0 from crates.io, with patches/) and
# the demo application linked with it and with vftrace, and optionally runs it under uhyve.
# Installs what it needs (pinned toolchains, uhyve) on the first run; later runs only rebuild
# what changed. trace.sh runs it traced, with the host's KVM events.
#
# Usage: examples/hermit/build.sh [--run] [--features FEATURES] [--no-default-features]
#   --run                   also boot the application under uhyve, untraced (needs /dev/kvm)
#   --features FEATURES     cargo features of the application (app/Cargo.toml)
#   --no-default-features   drop the application's default feature (vftrace)
#
# Environment:
#   HERMIT_WORK    where everything is built (default: examples/hermit/target, gitignored)
#   HERMIT_KERNEL_FEATURES  kernel cargo features (default: pci,acpi,smp)
#   HERMIT_CPUS    vCPUs for --run (default: 2)
#
# See README.md for what each step works around.
set -euo pipefail

readonly KERNEL_VERSION=0.11.0
readonly KERNEL_TOOLCHAIN=nightly-2025-03-15 # the toolchain hermit-kernel 0.11.0 pins
readonly APP_TOOLCHAIN=1.95.0
readonly UHYVE_VERSION=0.10.0

HERMIT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$HERMIT_DIR/../.." && pwd)
WORK=${HERMIT_WORK:-$HERMIT_DIR/target}
KERNEL_FEATURES=${HERMIT_KERNEL_FEATURES:-pci,acpi,smp}
CPUS=${HERMIT_CPUS:-2}

run_app=0
app_features=()
while (($#)); do
    case $1 in
    --run) run_app=1 ;;
    --features)
        app_features+=(--features "$2")
        shift
        ;;
    --no-default-features) app_features+=(--no-default-features) ;;
    -h | --help)
        sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "build.sh: unknown argument '$1' (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done

# The caller's flags are for other targets; each build below sets its own.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR RUSTC_WRAPPER

stage_start=0
stage() {
    stage_start=$(date +%s.%N)
    printf '\n==> %s\n' "$*" >&2
}
stage_done() {
    awk -v start="$stage_start" -v end="$(date +%s.%N)" 'BEGIN { printf "    done in %.1f s\n", end - start }' >&2
}
# Sets the ELF OS/ABI byte (e_ident[EI_OSABI], offset 7) of every ELF member of a GNU/SysV ar
# archive: walks the 60-byte member headers (size: bytes 48-57, decimal; data padded to even).
set_osabi() { # archive value
    local archive=$1 value=$2 total offset=8 header size data
    total=$(stat -c %s "$archive")
    [[ $(head -c 8 "$archive") == '!<arch>' ]] || die "$archive is not an ar archive"
    while ((offset + 60 <= total)); do
        header=$(dd if="$archive" iflag=skip_bytes,count_bytes skip=$offset count=60 status=none)
        size=${header:48:10}
        size=${size// /}
        [[ $size =~ ^[0-9]+$ ]] || die "$archive: bad member header at offset $offset"
        data=$((offset + 60))
        if [[ $(dd if="$archive" iflag=skip_bytes,count_bytes skip=$data count=4 status=none | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then
            printf "\\x$(printf %02x "$value")" |
                dd of="$archive" oflag=seek_bytes seek=$((data + 7)) conv=notrunc status=none
        fi
        offset=$((data + size + size % 2))
    done
}
die() {
    printf 'build.sh: error: %s\n' "$*" >&2
    exit 1
}

mkdir -p "$WORK"

# --- 1. toolchains and uhyve -------------------------------------------------------------------
stage "toolchains ($KERNEL_TOOLCHAIN for the kernel, $APP_TOOLCHAIN for the application) and uhyve $UHYVE_VERSION"
has_components() { # toolchain component...
    local installed
    installed=$(rustup component list --toolchain "$1" --installed 2>/dev/null) || return 1
    shift
    local component
    for component in "$@"; do
        grep -q "^$component" <<<"$installed" || return 1
    done
}
if ! has_components "$KERNEL_TOOLCHAIN" rust-src llvm-tools; then
    rustup toolchain install "$KERNEL_TOOLCHAIN" --profile minimal -c rust-src -c llvm-tools
fi
if ! has_components "$APP_TOOLCHAIN" rust-src; then
    rustup toolchain install "$APP_TOOLCHAIN" --profile minimal -c rust-src
fi
# vftrace's backend is built for it (frontend/build.rs does so for Hermit targets).
if ! rustup target list --toolchain "$APP_TOOLCHAIN" --installed | grep -qx x86_64-unknown-none; then
    rustup target add --toolchain "$APP_TOOLCHAIN" x86_64-unknown-none
fi
LLVM_BIN=$(rustc +"$KERNEL_TOOLCHAIN" --print sysroot)/lib/rustlib/$(rustc +"$KERNEL_TOOLCHAIN" -vV | sed -n 's/^host: //p')/bin
[[ -x $LLVM_BIN/llvm-objcopy ]] || die "llvm-objcopy missing in $LLVM_BIN (rustup component add llvm-tools --toolchain $KERNEL_TOOLCHAIN)"
if ! uhyve --version 2>/dev/null | grep -q " $UHYVE_VERSION\$"; then
    cargo +"$APP_TOOLCHAIN" install "uhyve@$UHYVE_VERSION" --locked
fi
stage_done

# --- 2. kernel source: crates.io + patches/ ----------------------------------------------------
stage "hermit-kernel $KERNEL_VERSION source with $(ls "$REPO_DIR"/patches/hermit-kernel-"$KERNEL_VERSION"-*.patch | wc -l) patch(es)"
fetch_dir=$WORK/fetch-kernel
mkdir -p "$fetch_dir"
cat >"$fetch_dir/Cargo.toml" <<EOF
# Only here so that cargo downloads hermit-kernel $KERNEL_VERSION from crates.io.
[workspace]
[package]
name = "fetch-hermit-kernel"
version = "0.0.0"
edition = "2021"
[lib]
path = "lib.rs"
[dependencies]
hermit-kernel = { version = "=$KERNEL_VERSION", default-features = false }
EOF
: >"$fetch_dir/lib.rs"
cargo +"$APP_TOOLCHAIN" fetch --quiet --manifest-path "$fetch_dir/Cargo.toml"
pristine_manifest=$(cargo +"$APP_TOOLCHAIN" metadata --format-version 1 --manifest-path "$fetch_dir/Cargo.toml" |
    grep -o "\"manifest_path\":\"[^\"]*hermit-kernel-$KERNEL_VERSION/Cargo.toml\"" | head -n1 | cut -d'"' -f4)
[[ -f $pristine_manifest ]] || die "cargo fetched hermit-kernel $KERNEL_VERSION but its source was not found"
pristine_src=$(dirname "$pristine_manifest")

kernel_src=$WORK/kernel-src
patch_stamp=$(cat "$REPO_DIR"/patches/hermit-kernel-"$KERNEL_VERSION"-*.patch | sha256sum | cut -d' ' -f1)
if [[ $(cat "$kernel_src/.vftrace-patches" 2>/dev/null) != "$patch_stamp" ]]; then
    rm -rf "$kernel_src"
    cp -r "$pristine_src" "$kernel_src"
    # A repository of its own, so that `git apply` patches relative to the kernel source (inside
    # the project's repository it would apply relative to the project's root) and so that new
    # patches can be made with `git diff`.
    git -C "$kernel_src" init --quiet
    git -C "$kernel_src" add --all
    git -C "$kernel_src" -c user.name=vftrace -c user.email=vftrace@localhost commit --quiet -m "hermit-kernel $KERNEL_VERSION"
    for patch in "$REPO_DIR"/patches/hermit-kernel-"$KERNEL_VERSION"-*.patch; do
        echo "    applying $(basename "$patch")" >&2
        git -C "$kernel_src" apply --whitespace=nowarn "$patch" || die "$patch does not apply to hermit-kernel $KERNEL_VERSION"
    done
    echo "$patch_stamp" >"$kernel_src/.vftrace-patches"
fi
stage_done

# --- 3. instrumented kernel --------------------------------------------------------------------
stage "kernel: cargo build (x86_64-unknown-none, build-std, features $KERNEL_FEATURES, mcount-instrumented)"
kernel_rustflags=(
    -Zmutable-noalias=no # as Hermit's xtask: https://github.com/hermit-os/kernel/issues/200
    # One mcount call per function as compiled (after inlining). Hermit's xtask also passes
    # '-Cpasses=ee-instrument<post-inline>': with this nightly that runs the pass once more before
    # inlining and doubles the call sites (11801 instead of 5316; 1781 functions then call
    # mcount several times with the same frame).
    -Zinstrument-mcount
    -Cforce-frame-pointers=yes # the caller's return address is at [rbp+8] in mcount
)
(
    IFS=$'\x1f'
    cd "$kernel_src"
    CARGO_ENCODED_RUSTFLAGS="${kernel_rustflags[*]}" CARGO_TARGET_DIR="$WORK/kernel-build" \
        cargo +"$KERNEL_TOOLCHAIN" build --release --target x86_64-unknown-none \
        -Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem \
        --no-default-features --features "$KERNEL_FEATURES"
)
stage_done

# --- 4. archive post-processing (what Hermit's xtask does) -------------------------------------
built_archive=$WORK/kernel-build/x86_64-unknown-none/release/libhermit.a
kernel_dir=$WORK/kernel
kernel_archive=$kernel_dir/libhermit.a
if [[ ! -f $kernel_archive || $built_archive -nt $kernel_archive ]]; then
    stage "kernel archive: keep sys_*, _start, __bss_start, runtime_entry, mcount global; OS/ABI = Hermit"
    mkdir -p "$kernel_dir"
    cp "$built_archive" "$kernel_archive.tmp"
    # The application links std and its dependencies itself: every kernel symbol other than its
    # interface gets a private prefix so that the two copies of core, alloc, ... do not collide.
    # mcount is undefined in the kernel, so it stays the plain `mcount` the tracer defines.
    "$LLVM_BIN/llvm-nm" --export-symbols "$kernel_archive.tmp" 2>/dev/null | sort -u |
        awk '
            /^sys_/ || $0 == "_start" || $0 == "__bss_start" || $0 == "runtime_entry" || $0 == "mcount" { next }
            /^_ZN/ { print $0, "_ZN6hermit" substr($0, 4); next }
            { print $0, "hermit_" $0 }
        ' >"$kernel_dir/redefine-syms"
    "$LLVM_BIN/llvm-objcopy" --redefine-syms="$kernel_dir/redefine-syms" "$kernel_archive.tmp"
    # Hermit's loader and linker expect ELFOSABI_STANDALONE (255) in every member.
    set_osabi "$kernel_archive.tmp" 255
    mv "$kernel_archive.tmp" "$kernel_archive"
    printf '    %s: %s symbols renamed, %s mcount call sites\n' "$kernel_archive" \
        "$(wc -l <"$kernel_dir/redefine-syms")" \
        "$("$LLVM_BIN/llvm-objdump" -dr "$kernel_archive" | grep -c 'R_X86_64_PLT32.mcount-0x4')" >&2
    stage_done
fi

# --- 5. application ----------------------------------------------------------------------------
stage "application: cargo build (soft-float Hermit target, build-std, mcount-instrumented) ${app_features[*]}"
(
    cd "$HERMIT_DIR/app"
    # Stable with RUSTC_BOOTSTRAP: -Z flags, build-std and a JSON target on the project's compiler.
    # The vftrace crate builds its backend with a nested cargo, never instrumented.
    RUSTC_BOOTSTRAP=1 HERMIT_KERNEL_DIR=$kernel_dir CARGO_TARGET_DIR="$WORK/app-build" \
        RUSTFLAGS="-Zinstrument-mcount -Cforce-frame-pointers=yes" \
        cargo +"$APP_TOOLCHAIN" build --release \
        --target "$HERMIT_DIR/x86_64-unknown-hermit-softfloat.json" -Zjson-target-spec \
        -Zbuild-std=std,panic_abort -Zbuild-std-features=compiler-builtins-mem \
        "${app_features[@]}"
)
app=$WORK/app-build/x86_64-unknown-hermit-softfloat/release/vftrace-hermit-demo
[[ -f $app ]] || die "the build did not produce $app"
printf '    %s: %s bytes, %s mcount call sites\n' "$app" "$(stat -c %s "$app")" \
    "$("$LLVM_BIN/llvm-objdump" -d --no-show-raw-insn "$app" | grep -c 'call.*<mcount>')" >&2
if "$LLVM_BIN/llvm-objdump" -d --no-show-raw-insn "$app" | grep -q '%xmm'; then
    echo "    warning: $app uses SSE registers; under PVM that code stops the guest" >&2
fi
ln -sfn "$app" "$WORK/vftrace-hermit-demo" # a fixed name for trace.sh and the tests
stage_done

# --- 6. run ------------------------------------------------------------------------------------
if ((run_app)); then
    stage "run under uhyve ($CPUS vCPUs; host folder $WORK/out is the guest's /root/out)"
    [[ -r /dev/kvm && -w /dev/kvm ]] || die "/dev/kvm is not usable: uhyve needs KVM"
    mkdir -p "$WORK/out"
    rm -rf "$WORK/out/demo"
    mkdir -p "$WORK/out/demo" # the guest cannot create folders (mkdir: ENOSYS)
    # Kernel 0.11 forwards only paths under /root to uhyve's file system (others: EINVAL).
    # The kernel's bootargs are "KERNEL_ARGS -- APP_ARGS"; the first "--" is uhyve's own.
    uhyve --cpu-count "$CPUS" --memory-size 256MiB --file-mapping "$WORK/out:/root/out" \
        "$app" -- -- /root/out/demo/report.txt
    stage_done
    [[ -s $WORK/out/demo/report.txt ]] || die "the guest did not write $WORK/out/demo/report.txt"
    echo "    the guest's report, written through the file mapping: $WORK/out/demo/report.txt" >&2
fi
