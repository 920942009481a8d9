//! The tree `krunner pull` makes, compared with the one `umoci unpack` (as root) makes of the
//! same image copied out of the same registry with `skopeo copy`: path set, file type, mode
//! (07777), owner, symlink target, content hash, xattrs (without `user.rootlesscontainers`),
//! device numbers, hard-link groups and the mtimes of everything but directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::oci::{
    busybox_image, cap_net_bind_service, Compression, Entry, Image, ImageBuilder, Layer, Tar,
};
use crate::util::registry::Registry;
use crate::util::{
    diff_trees, hardlink_groups, run_tool, skip, snapshot, Kind, Need, Node, TestDir,
};

const NEEDS: &[Need] = &[
    Need::Root,
    Need::Tool("docker-registry"),
    Need::Tool("skopeo"),
    Need::Tool("umoci"),
];

/// Every unpack case in three layers (gzip, gzip, uncompressed).
fn kitchen_sink() -> Image {
    let long_dir = "deep/".repeat(25);
    let long_target = format!("/{}target", "x/".repeat(70));
    let base = vec![
        Entry::dir("etc"),
        Entry::file("etc/note", "note\n").xattr("user.note", "hello"),
        Entry::symlink("etc/rel", "note"),
        Entry::symlink("etc/abs", "/etc/note"),
        Entry::symlink("dangling", "/does/not/exist"),
        Entry::symlink("longlink", long_target.as_str()),
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/suid", "#!/bin/sh\n").mode(0o4755),
        Entry::file("usr/bin/sgid", "#!/bin/sh\n")
            .mode(0o2755)
            .owner(0, 42),
        Entry::file("usr/bin/cap", "cap\n")
            .mode(0o755)
            .xattr("security.capability", cap_net_bind_service()),
        Entry::dir("tmp").mode(0o1777),
        Entry::dir("srv").mode(0o2775).owner(1234, 5678),
        Entry::dir("empty"),
        Entry::dir("var"),
        Entry::dir("var/empty").mode(0o555),
        Entry::dir("data"),
        Entry::file("data/owned", "owned\n")
            .mode(0o600)
            .owner(1234, 5678),
        Entry::file("data/orig", "linked content\n"),
        Entry::hardlink("data/same-layer", "data/orig"),
        Entry::file("swap", "a file, later a symlink"),
        Entry::dir("dev"),
        Entry::fifo("dev/fifo").mode(0o620),
        Entry::char_dev("dev/null", 1, 3),
        Entry::char_dev("dev/zero", 1, 5).mode(0o640).owner(0, 5),
        Entry {
            kind: crate::util::oci::EntryKind::Block,
            dev: (7, 200),
            ..Entry::char_dev("dev/blk", 0, 0).mode(0o660)
        },
        Entry::dir("wh"),
        Entry::file("wh/gone", "gone"),
        Entry::file("wh/kept", "kept"),
        Entry::dir("wh/gonedir"),
        Entry::file("wh/gonedir/inner", "inner"),
        Entry::dir("opq"),
        Entry::file("opq/old", "old"),
        Entry::dir("opq/olddir"),
        Entry::file("opq/olddir/x", "x"),
        Entry::dir(long_dir.trim_end_matches('/')),
        Entry::file(format!("{long_dir}file-with-a-long-path"), "long path\n"),
    ];
    let upper = vec![
        Entry::whiteout("wh/gone"),
        Entry::whiteout("wh/gonedir"),
        Entry::dir("opq"),
        Entry::opaque("opq"),
        Entry::file("opq/new", "new"),
        Entry::dir("other"),
        Entry::hardlink("other/lower-layer", "data/orig"),
        Entry::symlink("swap", "etc/note"),
        Entry::dir("srv").mode(0o750).owner(42, 42),
        Entry::file("etc/note", "note, rewritten\n")
            .mode(0o640)
            .xattr("user.note", "again")
            .xattr("user.other", [0u8, 1, 2, 255]),
    ];
    let top = vec![
        Entry::dir("home"),
        Entry::dir("home/user").mode(0o700).owner(1000, 1000),
        Entry::file("home/user/ping", "ping\n")
            .mode(0o4750)
            .owner(1000, 1000)
            .xattr("security.capability", cap_net_bind_service()),
        Entry::fifo("home/user/pipe").owner(1000, 1000),
        Entry::file("empty-file", ""),
        Entry::file("old-file", "from 2001\n").mtime(1_000_000_000),
    ];
    ImageBuilder::new()
        .layer(Layer::gzip(base))
        .layer(Layer::gzip(upper))
        .layer(Layer::new(
            &Tar::new().with(top).finish(),
            Compression::None,
        ))
        .build()
}

/// Pushes `image`, pulls it with krunner and with skopeo + umoci, and compares the trees.
fn compare(case: &str, image: &Image) {
    let reg = Registry::shared();
    let repo_tag = format!("umoci-{case}:v1");
    reg.push(image, &repo_tag);
    let td = TestDir::new(&format!("umoci-{case}"));

    let out = td.krunner().args(["pull", &reg.reference(&repo_tag)]).run();
    let ours = out.rootfs();

    let layout = td.join("layout");
    reg.pull_layout(&repo_tag, &layout, "v1");
    let bundle = td.join("bundle");
    run_tool(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:v1", layout.display()))
            .arg(&bundle),
    );
    let theirs = bundle.join("rootfs");

    let a = snapshot(&theirs);
    let b = snapshot(&ours);
    let mut diffs = diff_trees(&a, &b, false);
    diffs.extend(mtime_diffs(&a, &b));
    let (ga, gb) = (hardlink_groups(&a), hardlink_groups(&b));
    if ga != gb {
        diffs.push(format!("hard-link groups: umoci {ga:?} != krunner {gb:?}"));
    }
    assert!(
        diffs.is_empty(),
        "krunner's tree ({}) differs from umoci's ({}) in {} places \
         (\"expected\" = umoci, \"actual\" = krunner):\n  {}\n{out}",
        ours.display(),
        theirs.display(),
        diffs.len(),
        diffs.join("\n  ")
    );
    eprintln!("{case}: {} entries identical to umoci's", b.len());
}

/// mtimes of everything but directories (whose mtimes depend on the order of later changes).
fn mtime_diffs(a: &BTreeMap<PathBuf, Node>, b: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    a.iter()
        .filter_map(|(p, na)| {
            let nb = b.get(p)?;
            (na.kind != Kind::Dir && nb.kind != Kind::Dir && na.mtime != nb.mtime)
                .then(|| format!("{}: mtime {} != {}", p.display(), na.mtime, nb.mtime))
        })
        .collect()
}

#[test]
fn kitchen_sink_matches_umoci() {
    if skip(NEEDS) {
        return;
    }
    let image = kitchen_sink();
    compare("kitchen-sink", &image);
}

#[test]
fn busybox_matches_umoci() {
    if skip(NEEDS) || skip(&[Need::Tool("busybox")]) {
        return;
    }
    compare("busybox", busybox_image());
}

/// The expectations behind the kitchen sink, checked on umoci's own output, so that a
/// comparison failure can be blamed on krunner and not on the image.
#[test]
fn umoci_reference_tree_is_what_the_kitchen_sink_means() {
    if skip(NEEDS) {
        return;
    }
    let reg = Registry::shared();
    let image = kitchen_sink();
    reg.push(&image, "umoci-reference:v1");
    let td = TestDir::new("umoci-reference");
    let layout = td.join("layout");
    reg.pull_layout("umoci-reference:v1", &layout, "v1");
    let bundle = td.join("bundle");
    run_tool(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:v1", layout.display()))
            .arg(&bundle),
    );
    let t = snapshot(&bundle.join("rootfs"));
    let get = |p: &str| {
        t.get(Path::new(p))
            .unwrap_or_else(|| panic!("umoci's tree has no {p}"))
    };
    assert!(!t.contains_key(Path::new("wh/gone")));
    assert!(!t.contains_key(Path::new("wh/gonedir")));
    assert!(t.contains_key(Path::new("wh/kept")));
    assert!(!t.contains_key(Path::new("opq/old")));
    assert!(t.contains_key(Path::new("opq/new")));
    assert_eq!(get("usr/bin/suid").mode, 0o4755);
    assert_eq!(get("srv").mode, 0o750);
    assert_eq!((get("srv").uid, get("srv").gid), (42, 42));
    assert_eq!(get("dev/null").kind, Kind::Char);
    assert_eq!(get("dev/null").rdev, Some((1, 3)));
    assert_eq!(get("dev/blk").kind, Kind::Block);
    assert_eq!(get("dev/fifo").kind, Kind::Fifo);
    assert_eq!(get("swap").kind, Kind::Symlink);
    assert_eq!(get("home/user/ping").mode, 0o4750);
    assert_eq!(
        get("home/user/ping").xattrs.get("security.capability"),
        Some(&cap_net_bind_service())
    );
    assert_eq!(
        get("etc/note").xattrs.get("user.note").map(Vec::as_slice),
        Some(&b"again"[..])
    );
    assert_eq!(get("data/orig").nlink, 3);
}

/// Writers that start from a bare USTAR header (as `tar::Header::new_ustar()` gives) leave the
/// device number fields of non-device entries all NUL. Go's archive/tar (umoci, containerd,
/// docker) reads them as 0; so must krunner.
#[test]
fn nul_device_fields_match_umoci() {
    if skip(NEEDS) {
        return;
    }
    let tar = Tar::new()
        .nul_device_fields()
        .with([
            Entry::dir("run"),
            Entry::fifo("run/pipe"),
            Entry::file("run/file", "content"),
            Entry::symlink("run/link", "file"),
            Entry::char_dev("run/null", 1, 3),
        ])
        .finish();
    let image = ImageBuilder::new()
        .layer(Layer::new(&tar, Compression::Gzip))
        .build();
    compare("nul-device-fields", &image);
}
