//! Raw, generated bindings to the libkrun C API (the subset krunner uses).
//!
//! Nothing here has logic: see `include/krunner-libkrun.h` for the declarations and
//! krunner's VM child for the only caller.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    missing_docs
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
