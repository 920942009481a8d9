//! Generates Rust declarations for the libkrun C API with bindgen and decides how libkrun is
//! linked.
//!
//! - feature `bundled` (default): libkrun is the crates.io `libkrun` crate, linked statically;
//!   bindings come from the project's header `include/krunner-libkrun.h`, so no libkrun
//!   development package is needed.
//! - feature `system` (without `bundled`): pkg-config finds the system's `libkrun`; bindings are
//!   generated from its `<libkrun.h>` and the library is linked dynamically.
//!
//! It also tells krunner's own build script which libkrun this is (`cargo:libkrun_version`,
//! `cargo:libkrun_link`, read there as `DEP_KRUNNER_KRUN_*`), for `krunner --version`.

use std::env;
use std::path::PathBuf;

/// The exact version the `libkrun` dependency is pinned to (`version = "=X.Y.Z"`) in this
/// crate's Cargo.toml. The pin is exact, so it is the version cargo resolved and built; the
/// libkrun crate declares no `links` key that could tell us otherwise. Both spellings are read:
/// the inline table of the source tree, and the `[dependencies.libkrun]` table cargo writes
/// into a published crate's normalized manifest.
fn pinned_libkrun_version() -> Option<String> {
    let dir = env::var_os("CARGO_MANIFEST_DIR")?;
    let manifest = std::fs::read_to_string(PathBuf::from(dir).join("Cargo.toml")).ok()?;
    let exact = |version_part: &str| -> Option<String> {
        let quoted = version_part.split('"').nth(1)?;
        quoted.strip_prefix('=').map(|v| v.trim().to_string())
    };
    let mut in_table = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_table = line == "[dependencies.libkrun]";
            continue;
        }
        if in_table && line.starts_with("version") {
            return exact(line);
        }
        if line.starts_with("libkrun ") || line.starts_with("libkrun=") {
            return exact(line.split("version").nth(1)?);
        }
    }
    None
}

fn main() {
    println!("cargo:rerun-if-changed=Cargo.toml");
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
        println!("cargo:libkrun_version={}", lib.version);
        println!("cargo:libkrun_link=system, dynamic");
    } else {
        if !bundled {
            panic!("krunner-sys needs feature `bundled` (default) or `system`");
        }
        builder = builder.header(own_header);
        let version = pinned_libkrun_version().unwrap_or_else(|| "unknown".into());
        println!("cargo:libkrun_version={version}");
        println!("cargo:rustc-env=KRUNNER_BUNDLED_LIBKRUN_VERSION={version}");
        println!("cargo:libkrun_link=bundled from crates.io, static");
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
