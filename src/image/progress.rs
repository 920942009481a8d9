//! Pull progress on stderr: bars (per layer and in total, bytes and rate) when stderr is a
//! terminal, plain log lines otherwise. stdout is never touched here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes for one pull.
#[derive(Clone)]
pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar)>,
    image: String,
}

impl Progress {
    /// Bars when `interactive` (stderr is a terminal and not quiet), log lines otherwise.
    pub fn new(image: &str, interactive: bool) -> Progress {
        let bars = interactive.then(|| {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = mp.add(ProgressBar::new(0));
            total.set_style(style("total"));
            total.set_prefix("total");
            (mp, total)
        });
        Progress {
            bars,
            image: image.to_string(),
        }
    }

    /// Announces a layer download of `size` bytes; the returned handle takes byte counts.
    pub fn layer(&self, index: usize, count: usize, digest: &str, size: u64) -> LayerProgress {
        let short = digest.get(7..19).unwrap_or(digest).to_string();
        let bar = self.bars.as_ref().map(|(mp, total)| {
            total.inc_length(size);
            let b = mp.insert_before(total, ProgressBar::new(size));
            b.set_style(style("layer"));
            b.set_prefix(format!("{short} {}/{count}", index + 1));
            (b, total.clone())
        });
        if bar.is_none() {
            tracing::info!(image = %self.image, "layer {}/{count} {short}: downloading {}", index + 1, human_bytes(size));
        }
        LayerProgress {
            inner: Arc::new(LayerInner {
                bar,
                done: AtomicU64::new(0),
                start: Instant::now(),
                label: format!("layer {}/{count} {short}", index + 1),
                image: self.image.clone(),
            }),
        }
    }

    /// Logs a step (bars are suspended around it).
    pub fn step(&self, msg: &str) {
        match &self.bars {
            Some((mp, _)) => mp.suspend(|| tracing::info!(image = %self.image, "{msg}")),
            None => tracing::info!(image = %self.image, "{msg}"),
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if let Some((mp, total)) = &self.bars {
            total.finish_and_clear();
            let _ = mp.clear();
        }
    }
}

fn style(kind: &str) -> ProgressStyle {
    let template = if kind == "total" {
        "{prefix:>22} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
    } else {
        "{prefix:>22} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

struct LayerInner {
    bar: Option<(ProgressBar, ProgressBar)>,
    done: AtomicU64,
    start: Instant,
    label: String,
    image: String,
}

/// Progress of one layer download.
#[derive(Clone)]
pub struct LayerProgress {
    inner: Arc<LayerInner>,
}

impl LayerProgress {
    /// Adds downloaded bytes.
    pub fn inc(&self, n: u64) {
        self.inner.done.fetch_add(n, Ordering::Relaxed);
        if let Some((b, t)) = &self.inner.bar {
            b.inc(n);
            t.inc(n);
        }
    }

    /// The blob was already in the cache.
    pub fn cached(&self) {
        match &self.inner.bar {
            Some((b, t)) => {
                t.inc(b.length().unwrap_or(0));
                b.finish_with_message("cached");
            }
            None => {
                tracing::info!(image = %self.inner.image, "{}: already in the cache", self.inner.label)
            }
        }
    }

    /// The download finished.
    pub fn done(&self) {
        let bytes = self.inner.done.load(Ordering::Relaxed);
        let secs = self.inner.start.elapsed().as_secs_f64();
        match &self.inner.bar {
            Some((b, _)) => b.finish(),
            None => tracing::info!(
                image = %self.inner.image,
                "{}: downloaded {} in {:.1} s ({}/s)",
                self.inner.label,
                human_bytes(bytes),
                secs,
                human_bytes((bytes as f64 / secs.max(0.001)) as u64)
            ),
        }
    }
}

/// `1.5 MB`-style sizes for humans (decimal units, as registries show them).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(190_000_000_000), "190.0 GB");
    }
}
