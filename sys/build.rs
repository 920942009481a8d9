//! Generates Rust declarations for the libkrun C API with bindgen.
//!
//! The header is the project's own `include/krunner-libkrun.h`, so the bindings build on
//! hosts with no libkrun development package. Linking the library itself is decided by the
//! `krunner` package (issue: microVM launcher), not here.

use std::env;
use std::path::PathBuf;

fn main() {
    let header = "include/krunner-libkrun.h";
    println!("cargo:rerun-if-changed={header}");
    let bindings = match bindgen::Builder::default()
        .header(header)
        .allowlist_function("krun_.*")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
    {
        Ok(b) => b,
        Err(e) => panic!("bindgen failed on {header} (is libclang-dev installed?): {e}"),
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("bindings.rs");
    if let Err(e) = bindings.write_to_file(&out) {
        panic!("cannot write {}: {e}", out.display());
    }
}
