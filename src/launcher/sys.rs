//! Placeholder: the syscall seam is being written.
