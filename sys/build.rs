//! Generates Rust declarations for the libkrun C API with bindgen and decides how libkrun is
//! linked.
//!
//! - feature `bundled` (default): libkrun is the crates.io `libkrun` crate, linked statically;
//!   bindings come from the project's header `include/krunner-libkrun.h`, so no libkrun
//!   development package is needed.
//! - feature `system` (without `bundled`): pkg-config finds the system's `libkrun`; bindings are
//!   generated from its `<libkrun.h>` and the library is linked dynamically.

use std::env;
use std::path::PathBuf;

fn main() {
    let own_header = "include/krunner-libkrun.h";
    println!("cargo:rerun-if-changed={own_header}");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let bundled = env::var_os("CARGO_FEATURE_BUNDLED").is_some();
    let system = env::var_os("CARGO_FEATURE_SYSTEM").is_some();

    let mut builder = bindgen::Builder::default().allowlist_function("krun_.*");
    if system && !bundled {
        let lib = match pkg_config::Config::new()
            .atleast_version("1.9")
            .probe("libkrun")
        {
            Ok(lib) => lib,
            Err(e) => panic!(
                "feature `system`: pkg-config cannot find libkrun ({e}); install libkrun-devel \
                 (Fedora) or libkrun (Homebrew), or build with the default feature `bundled`"
            ),
        };
        builder = builder.header_contents("wrapper.h", "#include <libkrun.h>\n");
        for dir in &lib.include_paths {
            builder = builder.clang_arg(format!("-I{}", dir.display()));
        }
        println!("cargo:rustc-cfg=krunner_system_libkrun");
    } else {
        if !bundled {
            panic!("krunner-sys needs feature `bundled` (default) or `system`");
        }
        builder = builder.header(own_header);
    }
    println!("cargo::rustc-check-cfg=cfg(krunner_system_libkrun)");
    let bindings = match builder
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
    {
        Ok(b) => b,
        Err(e) => panic!("bindgen failed (is libclang-dev installed?): {e}"),
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("bindings.rs");
    if let Err(e) = bindings.write_to_file(&out) {
        panic!("cannot write {}: {e}", out.display());
    }
}
