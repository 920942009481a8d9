//! Raw, generated bindings to the libkrun C API (the subset krunner uses), and the link to
//! libkrun itself.
//!
//! Nothing here has logic: see `include/krunner-libkrun.h` for the declarations and krunner's
//! VM child (`src/launcher/krun_child.rs`) for the only caller.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    missing_docs
)]

// With the `bundled` feature the crates.io libkrun provides every `krun_*` symbol as
// `#[no_mangle] extern "C"`; naming the crate makes sure it is linked.
#[cfg(feature = "bundled")]
extern crate krun;

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// Whether this build links a system libkrun (feature `system`) rather than the bundled one.
pub const SYSTEM_LIBKRUN: bool = cfg!(krunner_system_libkrun);

/// The libkrun version bundled into this build, when it is the crates.io one (read by
/// build.rs from the exact pin in Cargo.toml).
#[cfg(feature = "bundled")]
pub const BUNDLED_LIBKRUN_VERSION: Option<&str> = Some(env!("KRUNNER_BUNDLED_LIBKRUN_VERSION"));
/// The libkrun version bundled into this build, when it is the crates.io one.
#[cfg(not(feature = "bundled"))]
pub const BUNDLED_LIBKRUN_VERSION: Option<&str> = None;
