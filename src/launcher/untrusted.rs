//! Reading a file a guest wrote, without trusting it.
//!
//! Anything in a share the guest can write (its results) may be a symlink to `/dev/zero` or to
//! a host secret, a FIFO that blocks a reader for ever, or gigabytes. The host therefore opens
//! it without following a final symlink and without blocking, accepts only a regular file, and
//! reads at most a cap.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a guest-written file was not read.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedFileError {
    /// It is a symlink (never followed).
    #[error("{path} is a symbolic link; it was not followed")]
    Symlink {
        /// The file.
        path: PathBuf,
    },
    /// It is not a regular file (a FIFO, a device, a directory, a socket).
    #[error("{path} is a {kind}, not a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// It holds more than the cap.
    #[error("{path} is larger than {cap} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        cap: u64,
    },
    /// Opening or reading it failed.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Reads the guest-written file at `path` as text of at most `cap` bytes; `Ok(None)` when
/// there is no such file. Blocking, but never for long: call it off the async runtime anyway.
pub fn read_capped(path: &Path, cap: u64) -> Result<Option<String>, UntrustedFileError> {
    let io = |source| UntrustedFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    // O_NOFOLLOW: a final symlink fails with ELOOP; O_NONBLOCK: opening a FIFO with no writer
    // does not wait for one.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(UntrustedFileError::Symlink {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io(e)),
    };
    // The type checked on the opened file, not the path: nothing can swap it in between.
    let meta = file.metadata().map_err(io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "FIFO"
        } else if ft.is_dir() {
            "directory"
        } else if ft.is_char_device() || ft.is_block_device() {
            "device"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(UntrustedFileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let too_large = || UntrustedFileError::TooLarge {
        path: path.to_path_buf(),
        cap,
    };
    if meta.len() > cap {
        return Err(too_large());
    }
    // The guest may still be growing it: read one byte past the cap to notice.
    let mut bytes = Vec::new();
    File::take(file, cap + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_regular_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("result");
        std::fs::write(&p, "exit_code=0\n").unwrap();
        assert_eq!(
            read_capped(&p, 100).unwrap().as_deref(),
            Some("exit_code=0\n")
        );
        assert!(read_capped(&t.path().join("none"), 100).unwrap().is_none());
    }

    #[test]
    fn refuses_a_symlink_even_to_a_regular_file() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("secret");
        std::fs::write(&target, "host secret").unwrap();
        let p = t.path().join("result");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = read_capped(&p, 100).unwrap_err();
        assert!(matches!(e, UntrustedFileError::Symlink { .. }), "{e:?}");
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        assert!(matches!(
            read_capped(&p, 100),
            Err(UntrustedFileError::Symlink { .. })
        ));
    }

    #[test]
    fn refuses_a_fifo_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("result");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Would block for ever without O_NONBLOCK: no writer ever comes.
        let e = read_capped(&p, 100).unwrap_err();
        assert!(
            matches!(e, UntrustedFileError::NotRegular { kind: "FIFO", .. }),
            "{e:?}"
        );
        assert!(matches!(
            read_capped(t.path(), 100),
            Err(UntrustedFileError::NotRegular {
                kind: "directory",
                ..
            })
        ));
    }

    #[test]
    fn refuses_a_file_past_the_cap_without_reading_it() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("result");
        let f = File::create(&p).unwrap();
        // Sparse: 1 GiB that costs nothing on disk.
        f.set_len(1 << 30).unwrap();
        let e = read_capped(&p, 64 * 1024).unwrap_err();
        assert!(matches!(e, UntrustedFileError::TooLarge { .. }), "{e:?}");
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
        std::fs::write(&p, "12345").unwrap();
        assert!(matches!(
            read_capped(&p, 4),
            Err(UntrustedFileError::TooLarge { .. })
        ));
        assert_eq!(read_capped(&p, 5).unwrap().as_deref(), Some("12345"));
    }
}
