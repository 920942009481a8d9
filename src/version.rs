//! What this build of krunner is: the version, the git revision it was built from, the libkrun
//! it links and the cargo features it was built with. `krunner --version` prints [`LONG`],
//! `krunner -V` prints [`SHORT`], and `krunner doctor` starts with [`LONG`]'s lines, so a bug
//! report carries all of it whichever command the user ran.
//!
//! The values are fixed at build time by `build.rs` (the git revision, "unknown" outside a git
//! checkout) and `sys/build.rs` (the libkrun version and how it is linked).

/// krunner's version and git revision: `0.1.0 (rev 0123456789ab)`.
pub const SHORT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("KRUNNER_GIT_REV"),
    ")"
);

/// The version, then one line each for the git revision, libkrun and the enabled features.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nrevision: ",
    env!("KRUNNER_GIT_REV"),
    "\nlibkrun: ",
    env!("KRUNNER_LIBKRUN_VERSION"),
    " (",
    env!("KRUNNER_LIBKRUN_LINK"),
    ")\nfeatures: ",
    env!("KRUNNER_FEATURES"),
);

/// The git revision krunner was built from (12 hex digits), or "unknown".
pub const GIT_REV: &str = env!("KRUNNER_GIT_REV");

/// The libkrun version this build links ("unknown" if the build could not tell).
pub const LIBKRUN_VERSION: &str = env!("KRUNNER_LIBKRUN_VERSION");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_version_names_everything() {
        let lines: Vec<&str> = LONG.lines().collect();
        assert_eq!(lines.len(), 4, "{LONG}");
        assert_eq!(lines[0], env!("CARGO_PKG_VERSION"));
        assert!(lines[1].starts_with("revision: "), "{LONG}");
        assert!(lines[2].starts_with("libkrun: "), "{LONG}");
        assert!(lines[3].starts_with("features: "), "{LONG}");
        // The default build bundles libkrun from crates.io: its version is known.
        if cfg!(feature = "bundled-libkrun") {
            assert_ne!(LIBKRUN_VERSION, "unknown");
            assert!(lines[3].contains("bundled-libkrun"), "{LONG}");
        }
        assert!(SHORT.contains(GIT_REV));
    }
}
