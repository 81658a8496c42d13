//! Links the post-processed Hermit kernel archive that ../build.sh made (libhermit.a).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=HERMIT_KERNEL_DIR");
    let kernel_dir = match env::var_os("HERMIT_KERNEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            println!(
                "cargo:warning=HERMIT_KERNEL_DIR is not set: build this crate with \
                 examples/hermit/build.sh, which builds the kernel and sets it"
            );
            std::process::exit(1);
        }
    };
    let archive = kernel_dir.join("libhermit.a");
    if !archive.is_file() {
        println!(
            "cargo:warning={} does not exist: run examples/hermit/build.sh",
            archive.display()
        );
        std::process::exit(1);
    }
    println!("cargo:rerun-if-changed={}", archive.display());
    println!("cargo:rustc-link-search=native={}", kernel_dir.display());
    println!("cargo:rustc-link-lib=static=hermit");
}
