//! Raw, generated bindings to the libkrun C API (the subset krunner uses), the link to
//! libkrun itself, and the raw system calls krunner makes outside them
//! ([`seccomp_filter_tsync`], and in [`linux`] the jail's idmapped mounts and user namespace).
//!
//! Nothing here has logic: see `include/krunner-libkrun.h` for the declarations and krunner's
//! VM child (`src/launcher/krun_child.rs`) for the only caller of the bindings.
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

#[cfg(target_os = "linux")]
pub mod linux;

/// Whether this build links a system libkrun (feature `system`) rather than the bundled one.
pub const SYSTEM_LIBKRUN: bool = cfg!(krunner_system_libkrun);

/// The libkrun version bundled into this build, when it is the crates.io one (read by
/// build.rs from the exact pin in Cargo.toml).
#[cfg(feature = "bundled")]
pub const BUNDLED_LIBKRUN_VERSION: Option<&str> = Some(env!("KRUNNER_BUNDLED_LIBKRUN_VERSION"));
/// The libkrun version bundled into this build, when it is the crates.io one.
#[cfg(not(feature = "bundled"))]
pub const BUNDLED_LIBKRUN_VERSION: Option<&str> = None;

/// seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC) with `prog`, on every thread of
/// the process, *without* setting no_new_privs first (every safe installer, seccompiler's
/// among them, sets it): needs CAP_SYS_ADMIN. Fails with EBUSY when a thread's filters
/// diverge, EINVAL for a program longer than 65,535 instructions.
pub fn seccomp_filter_tsync(prog: &[libc::sock_filter]) -> std::io::Result<()> {
    let len =
        u16::try_from(prog.len()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `prog`, `len` instructions of the kernel's own layout, which
    // outlive the call; the kernel copies the program and keeps no pointer to it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        // TSYNC: the id of a thread whose filters diverge.
        r if r > 0 => Err(std::io::Error::from_raw_os_error(libc::EBUSY)),
        _ => Err(std::io::Error::last_os_error()),
    }
}
