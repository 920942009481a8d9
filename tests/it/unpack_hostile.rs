//! Hostile layers and misbehaving registries. Every case is a real image pulled with
//! `krunner pull`; each must exit 1 with an error naming the layer digest (and the tar entry
//! for entry problems), leave the canary directory beside the cache untouched, write nothing
//! named `pwned*` anywhere, add no entry to `$CACHE/rootfs/` and leave no blob in
//! `$CACHE/blobs/` whose content does not match its name.
//!
//! Paths in the hostile entries aim at the canary: `..` chains and symlinks to `/` are
//! followed by the canary's absolute path, so an unpacker that escapes writes into the test
//! directory rather than into the host's `/`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::fake_registry::{BlobMode, FakeRegistry};
use crate::util::oci::{bomb_layer, Entry, Image, ImageBuilder, Layer};
use crate::util::registry::Registry;
use crate::util::{assert_cache_clean, find_named, skip, Canary, Outcome, TestDir, REGISTRY};

/// `..` components enough to climb from anywhere in the cache to `/`.
const UP: &str = "../../../../../../../../../../../../../../../../../../../../../../../../";

/// Panics unless the error message (not just the progress lines) names `layer`: the full
/// digest, or its first 12 hex digits.
#[track_caller]
pub fn assert_names_layer(out: &Outcome, layer: &str) {
    let short = &layer["sha256:".len().."sha256:".len() + 12];
    assert!(
        out.error_text().contains(short),
        "the error message does not name the layer {layer}\n{out}"
    );
}

/// The canary directory without its leading `/`, to put after `..` chains or `evil/`.
fn rel(canary: &Path) -> String {
    canary.to_str().unwrap().trim_start_matches('/').to_string()
}

/// What a hostile case checks for in the error message besides the image and layer digest.
struct Expect<'a> {
    /// Index of the offending layer in the (single) manifest.
    layer: usize,
    /// A piece of the offending entry's name that the message must contain.
    entry: Option<&'a str>,
    /// Words of which the message must contain one (without case), saying what was wrong.
    why: &'a [&'a str],
}

/// Pushes `make(canary)` to the shared registry, pulls it into a fresh cache and checks that
/// the pull was refused cleanly.
fn refused(case: &str, make: impl FnOnce(&Path) -> Image, expect: Expect<'_>) {
    let reg = Registry::shared();
    let td = TestDir::new(case);
    let canary = Canary::new(&td);
    let image = make(&canary.dir);
    let repo = format!("hostile-{case}");
    reg.push(&image, &format!("{repo}:v1"));
    let out = td
        .krunner()
        .args(["pull", &reg.reference(&format!("{repo}:v1"))])
        .run();
    check_refused(
        &td,
        &canary,
        &out,
        &image.manifest().layers[expect.layer],
        &repo,
        expect.entry,
    );
    out.error_has_any(expect.why);
}

fn check_refused(
    td: &TestDir,
    canary: &Canary,
    out: &Outcome,
    layer: &str,
    repo: &str,
    entry: Option<&str>,
) {
    eprintln!("{repo}: {}", out.error_text());
    out.failure(1).error_has(repo);
    assert!(
        out.stdout.is_empty(),
        "stdout must stay empty on error\n{out}"
    );
    assert_names_layer(out, layer);
    if let Some(e) = entry {
        out.error_has(e);
    }
    canary.assert_untouched(out);
    let pwned = find_named(td.path(), "pwned");
    assert!(
        pwned.is_empty(),
        "hostile entries were written: {pwned:?}\n{out}"
    );
    assert!(
        !Path::new("/pwned-root").exists() && !Path::new("/pwned-rel").exists(),
        "a hostile entry was written to the host's /\n{out}"
    );
    assert_cache_clean(&td.cache(), &[], out);
}

#[test]
fn dotdot_traversal() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "dotdot",
        |c| {
            Image::of_layers(vec![vec![
                Entry::file("ok", "fine"),
                Entry::file(format!("{UP}{}/pwned-dotdot", rel(c)), "escaped"),
            ]])
        },
        Expect {
            layer: 0,
            entry: Some("pwned-dotdot"),
            why: &["outside", "escape", "travers", "climb"],
        },
    );
}

#[test]
fn short_dotdot_traversal() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "dotdot-short",
        |_| {
            Image::of_layers(vec![vec![
                Entry::dir("etc"),
                Entry::file("etc/../../pwned-short", "escaped"),
            ]])
        },
        Expect {
            layer: 0,
            entry: Some("pwned-short"),
            why: &["outside", "escape", "travers", "climb"],
        },
    );
}

#[test]
fn absolute_name() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "absolute",
        |c| {
            Image::of_layers(vec![vec![Entry::file(
                format!("{}/pwned-abs", c.display()),
                "escaped",
            )]])
        },
        Expect {
            layer: 0,
            entry: Some("pwned-abs"),
            why: &["absolute"],
        },
    );
}

#[test]
fn parent_through_symlink_to_root() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "symlink-root",
        |c| {
            Image::of_layers(vec![vec![
                Entry::symlink("evil", "/"),
                Entry::file(format!("evil/{}/pwned-root", rel(c)), "escaped"),
            ]])
        },
        Expect {
            layer: 0,
            entry: Some("pwned-root"),
            why: &["symlink"],
        },
    );
}

#[test]
fn parent_through_absolute_symlink_to_canary() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "symlink-abs",
        |c| {
            Image::of_layers(vec![vec![
                Entry::symlink("evil", c.to_str().unwrap()),
                Entry::file("evil/pwned-abslink", "escaped"),
            ]])
        },
        Expect {
            layer: 0,
            entry: Some("pwned-abslink"),
            why: &["symlink"],
        },
    );
}

#[test]
fn parent_through_relative_escaping_symlink() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "symlink-rel",
        |c| {
            Image::of_layers(vec![
                vec![Entry::symlink("evil", UP.trim_end_matches('/'))],
                vec![Entry::file(format!("evil/{}/pwned-rel", rel(c)), "escaped")],
            ])
        },
        Expect {
            layer: 1,
            entry: Some("pwned-rel"),
            why: &["symlink"],
        },
    );
}

#[test]
fn hardlink_to_outside() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "hardlink",
        |c| {
            Image::of_layers(vec![vec![Entry::hardlink(
                "pwned-link",
                format!("{UP}{}/secret", rel(c)),
            )]])
        },
        Expect {
            layer: 0,
            entry: Some("pwned-link"),
            why: &["outside", "escape", "travers"],
        },
    );
}

#[test]
fn short_hardlink_to_outside() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "hardlink-short",
        |_| {
            Image::of_layers(vec![vec![Entry::hardlink(
                "pwned-link2",
                "../../canary/secret",
            )]])
        },
        Expect {
            layer: 0,
            entry: Some("pwned-link2"),
            why: &["outside", "escape", "travers"],
        },
    );
}

#[test]
fn symlink_named_dot() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "symlink-dot",
        |c| {
            Image::of_layers(vec![
                vec![Entry::file("ok", "fine")],
                vec![
                    Entry::symlink(".", c.to_str().unwrap()),
                    Entry::file("pwned-dot", "escaped"),
                ],
            ])
        },
        Expect {
            layer: 1,
            entry: None,
            why: &["root"],
        },
    );
}

#[test]
fn whiteout_through_symlink() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "whiteout-symlink",
        |c| {
            Image::of_layers(vec![
                vec![Entry::symlink("evil", c.to_str().unwrap())],
                vec![Entry::whiteout("evil/secret")],
            ])
        },
        Expect {
            layer: 1,
            entry: Some("evil/"),
            why: &["symlink"],
        },
    );
}

#[test]
fn whiteout_through_relative_symlink() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "whiteout-relsymlink",
        |c| {
            Image::of_layers(vec![
                vec![Entry::symlink("evil", UP.trim_end_matches('/'))],
                vec![Entry::whiteout(&format!("evil/{}/secret", rel(c)))],
            ])
        },
        Expect {
            layer: 1,
            entry: Some("evil/"),
            why: &["symlink"],
        },
    );
}

#[test]
fn bare_whiteout() {
    if skip(REGISTRY) {
        return;
    }
    refused(
        "bare-whiteout",
        |_| {
            Image::of_layers(vec![
                vec![Entry::dir("dir"), Entry::file("dir/keep", "keep")],
                vec![Entry::file("dir/.wh.", "")],
            ])
        },
        Expect {
            layer: 1,
            entry: Some("dir/.wh."),
            why: &["whiteout"],
        },
    );
}

#[test]
fn decompression_bomb() {
    if skip(REGISTRY) || skip(&[crate::util::Need::Tool("sha256sum")]) {
        return;
    }
    let started = Instant::now();
    refused(
        "bomb",
        |_| {
            ImageBuilder::new()
                .layer(Layer::gzip([Entry::file("ok", "fine")]))
                .layer(bomb_layer(600 << 20))
                .build()
        },
        Expect {
            layer: 1,
            entry: None,
            why: &["bomb", "exceed", "limit", "expan", "ratio"],
        },
    );
    let took = started.elapsed();
    eprintln!("decompression bomb refused in {took:?}");
    assert!(
        took < Duration::from_secs(120),
        "refusing the bomb took {took:?}"
    );
}

/// Serves a one-layer image from the fake registry with its layer in `mode` and checks that
/// the pull is refused cleanly.
fn broken_blob(case: &str, mode: BlobMode, why: &[&str]) {
    let fake = FakeRegistry::start();
    let image = Image::of_layers(vec![vec![
        Entry::file("big", vec![b'x'; 256 << 10]),
        Entry::file("other", "other"),
    ]]);
    let repo = format!("broken-{case}");
    fake.add(&repo, "v1", &image);
    let layer = image.manifest().layers[0].clone();
    fake.set_blob_mode(&layer, mode);
    let td = TestDir::new(case);
    let canary = Canary::new(&td);
    let out = td
        .krunner()
        .args(["pull", &fake.reference(&format!("{repo}:v1"))])
        .run();
    check_refused(&td, &canary, &out, &layer, &repo, None);
    out.error_has_any(why);
    assert!(
        !td.cache()
            .join("blobs/sha256")
            .join(&layer["sha256:".len()..])
            .exists(),
        "the broken blob is in the cache\n{out}"
    );
}

#[test]
fn blob_digest_mismatch() {
    broken_blob("corrupt", BlobMode::Corrupt, &["match", "digest", "verif"]);
}

#[test]
fn truncated_blob() {
    broken_blob(
        "short",
        BlobMode::Short,
        &["match", "bytes", "short", "truncat", "length"],
    );
}

#[test]
fn dropped_connection_mid_blob() {
    broken_blob(
        "dropped",
        BlobMode::Drop,
        &[
            "body",
            "connection",
            "end of file",
            "eof",
            "truncat",
            "bytes",
            "incomplete",
        ],
    );
}

/// Ctrl-C while a layer is still downloading and the layer below it has already been
/// applied: krunner stops promptly and leaves no partial blob, no partial tree and no rootfs.
#[test]
fn interrupted_pull_leaves_nothing() {
    use crate::util::list_names;
    let fake = FakeRegistry::start();
    let image = Image::of_layers(vec![
        vec![Entry::file("first", vec![b'a'; 64 << 10])],
        vec![Entry::file("second", vec![b'b'; 512 << 10])],
    ]);
    fake.add("interrupted", "v1", &image);
    let stalled = image.manifest().layers[1].clone();
    fake.set_blob_mode(&stalled, BlobMode::Stall);
    let td = TestDir::new("interrupted");
    let running = td
        .krunner()
        .args([
            "pull",
            "--parallel-downloads",
            "1",
            &fake.reference("interrupted:v1"),
        ])
        .spawn();
    // Wait until the stalled download has started (its half is on disk in ingest/).
    let ingest = td.cache().join("ingest");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while list_names(&ingest).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let t = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = running.wait();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "slow to stop: {:?}",
        t.elapsed()
    );
    out.failure(1).error_has("interrupted");
    assert!(
        list_names(&ingest).is_empty(),
        "partial download left: {:?}\n{out}",
        list_names(&ingest)
    );
    assert!(
        list_names(&td.cache().join("tmp")).is_empty(),
        "partial tree left\n{out}"
    );
    assert!(
        list_names(&td.cache().join("rootfs")).is_empty(),
        "a rootfs appeared\n{out}"
    );
    assert!(
        !td.cache()
            .join("blobs/sha256")
            .join(&stalled["sha256:".len()..])
            .exists(),
        "the partial blob entered the store\n{out}"
    );
}
