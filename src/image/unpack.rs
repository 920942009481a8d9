//! Placeholder replaced by the real applier.
#![allow(missing_docs, dead_code)]
use std::path::Path;
#[derive(Debug, Clone, Copy)]
pub enum Compression { None, Gzip, Zstd }
pub struct LayerInfo<'a> { pub digest: &'a str, pub compression: Compression, pub diff_id: Option<&'a str>, pub compressed_size: u64 }
#[derive(Debug, Clone)]
pub struct UnpackOptions { pub privileged: bool, pub max_expansion_ratio: u64, pub min_expansion_allowance: u64 }
impl Default for UnpackOptions { fn default() -> Self { UnpackOptions { privileged: true, max_expansion_ratio: 100, min_expansion_allowance: 512 << 20 } } }
pub struct LayerStats { pub entries: u64, pub bytes: u64, pub skipped_devices: u64 }
#[derive(Debug, thiserror::Error)]
#[error("unpack not implemented")]
pub struct UnpackError;
pub fn apply_layer<R: std::io::Read>(_root: &Path, _layer: &LayerInfo<'_>, _blob: R, _opts: &UnpackOptions) -> Result<LayerStats, UnpackError> { Err(UnpackError) }
pub fn compression_for_media_type(mt: &str) -> Option<Compression> { if mt.ends_with("gzip") { Some(Compression::Gzip) } else { None } }
