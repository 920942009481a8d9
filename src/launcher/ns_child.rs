//! Placeholder: the namespace backend child is being written.
#![allow(missing_docs)]
use std::path::Path;
pub fn ns_child_main(_spec: &Path) -> i32 { eprintln!("namespace backend not implemented"); 125 }
pub fn ns_init_main(_spec: &Path) -> i32 { 125 }
