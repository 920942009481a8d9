//! `krunner pull` end to end: images pushed to a loopback `docker-registry` (or served by the
//! fake registry), pulled with the built binary, and the resulting rootfs, cache and registry
//! traffic checked.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::fake_registry::FakeRegistry;
use crate::util::oci::{
    busybox_entries, busybox_image, Compression, Entry, Image, ImageBuilder, Layer, Tar, MTIME,
};
use crate::util::registry::Registry;
use crate::util::{
    basic_auth_value, expected_rootfs, host_arch, is_root, node, run_tool, sha256_digest, skip,
    write_auth_file, Kind, Need, TestDir, REGISTRY,
};

/// A small one-layer image with `/etc/tag` holding `text`.
fn tagged_image(text: &str) -> Image {
    Image::of_layers(vec![vec![Entry::dir("etc"), Entry::file("etc/tag", text)]])
}

/// Canonical form of a path, for comparisons.
fn canon(p: &Path) -> std::path::PathBuf {
    fs::canonicalize(p).unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.display()))
}

#[test]
fn busybox_pull_runs_keeps_metadata_and_is_cached() {
    if skip(REGISTRY) || skip(&[Need::Tool("busybox")]) {
        return;
    }
    let reg = Registry::shared();
    let image = busybox_image();
    reg.push(image, "pull-busybox:v1");
    let reference = reg.reference("pull-busybox:v1");
    let td = TestDir::new("busybox");

    let out = td.krunner().args(["pull", &reference]).run();
    let root = out.rootfs();
    assert_eq!(
        canon(&root),
        canon(&expected_rootfs(&td.cache(), &image.manifest().desc.digest)),
        "the rootfs path is not $CACHE/rootfs/<manifest hex>/rootfs\n{out}"
    );
    assert!(
        root.starts_with(td.cache()) || canon(&root).starts_with(canon(&td.cache())),
        "{out}"
    );

    // The static busybox runs from the tree, directly and as a shell.
    let status = Command::new(root.join("bin/busybox"))
        .arg("true")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{}/bin/busybox true: {status}",
        root.display()
    );
    let echoed = run_tool(Command::new(root.join("bin/busybox")).args(["sh", "-c", "echo ok"]));
    assert_eq!(echoed, "ok\n");

    // Contents as built.
    let host_busybox = sha256_digest(&fs::read("/bin/busybox").unwrap());
    let bb = node(&root.join("bin/busybox"));
    assert_eq!(bb.kind, Kind::File);
    assert_eq!(bb.content.as_deref(), Some(host_busybox.as_str()));
    assert_eq!(bb.mode, 0o755);
    assert_eq!(bb.mtime, MTIME as i64, "mtime of bin/busybox");
    let applets: Vec<&Entry> = busybox_entries()
        .iter()
        .filter(|e| e.link == b"/bin/busybox")
        .collect();
    assert!(applets.len() > 100);
    for e in &applets {
        let p = root.join(String::from_utf8_lossy(&e.path).as_ref());
        assert_eq!(
            fs::read_link(&p).unwrap_or_else(|err| panic!("readlink {}: {err}", p.display())),
            Path::new("/bin/busybox")
        );
    }
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("user:x:1000:1000:"), "{passwd}");
    assert_eq!(
        node(&root.join("tmp")).mode,
        0o1777,
        "tmp keeps its sticky bit"
    );
    assert_eq!(node(&root.join("root")).mode, 0o700);
    let home = node(&root.join("home/user"));
    assert_eq!(home.mode, 0o750);
    let shadow = node(&root.join("etc/shadow"));
    assert_eq!(shadow.mode, 0o640);
    if is_root() {
        assert_eq!((home.uid, home.gid), (1000, 1000), "owner of home/user");
        assert_eq!((shadow.uid, shadow.gid), (0, 42), "owner of etc/shadow");
        let profile = node(&root.join("home/user/.profile"));
        assert_eq!((profile.uid, profile.gid), (1000, 1000));
    } else {
        eprintln!("not root: ownership not checked");
    }

    // `images` lists it.
    let images = td.krunner().arg("images").run();
    images.success();
    for col in ["REFERENCE", "PLATFORM", "DIGEST", "SIZE", "LAST USED"] {
        assert!(images.stdout.contains(col), "no {col} column\n{images}");
    }
    let hex = &image.manifest().desc.digest["sha256:".len()..];
    let row = images
        .stdout
        .lines()
        .find(|l| l.contains("pull-busybox"))
        .unwrap_or_else(|| panic!("no row for pull-busybox\n{images}"));
    assert!(
        row.contains(&format!("linux/{}", host_arch())),
        "{row}\n{images}"
    );
    assert!(
        row.contains(&hex[..12]),
        "row does not show the digest {hex}\n{images}"
    );

    // A re-pull of the unchanged tag: one manifest request, no blob request, same path.
    let before = reg.repo_requests("pull-busybox").len();
    let again = td.krunner().args(["pull", &reference]).run();
    assert_eq!(again.rootfs(), root);
    let new: Vec<_> = reg.repo_requests("pull-busybox")[before..].to_vec();
    assert!(new.iter().all(|r| r.status == 200), "{new:?}");
    let manifests = new
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count();
    let blobs = new.iter().filter(|r| r.path.contains("/blobs/")).count();
    assert_eq!(
        (manifests, blobs),
        (1, 0),
        "a re-pull should make exactly one manifest request and no blob request: {new:?}\n{again}"
    );
}

#[test]
fn offline_uses_the_cache_and_fails_clearly_without_it() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    reg.push(&tagged_image("offline"), "offline-img:v1");
    let reference = reg.reference("offline-img:v1");
    let td = TestDir::new("offline");

    // Uncached and offline: a clear error, no request.
    let pushed = reg.repo_requests("offline-img").len();
    let out = td.krunner().args(["pull", "--offline", &reference]).run();
    out.failure(1)
        .error_has("offline-img")
        .error_has_any(&["offline"]);
    assert_eq!(
        reg.repo_requests("offline-img").len(),
        pushed,
        "--offline contacted the registry"
    );

    let root = td.krunner().args(["pull", &reference]).run().rootfs();
    let before = reg.repo_requests("offline-img").len();
    let offline = td.krunner().args(["pull", "--offline", &reference]).run();
    assert_eq!(offline.rootfs(), root);
    let by_env = td
        .krunner()
        .env("KRUNNER_OFFLINE", "true")
        .args(["pull", &reference])
        .run();
    assert_eq!(by_env.rootfs(), root);
    assert_eq!(
        reg.repo_requests("offline-img").len(),
        before,
        "an offline pull contacted the registry"
    );
    assert_eq!(fs::read_to_string(root.join("etc/tag")).unwrap(), "offline");

    // Another image, never pulled, still fails offline (the registry has it).
    reg.push(&tagged_image("other"), "offline-img:v2");
    td.krunner()
        .args(["pull", "--offline", &reg.reference("offline-img:v2")])
        .run()
        .failure(1)
        .error_has("offline-img");
}

#[test]
fn multi_arch_index_picks_the_platform() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    let arch_image = |arch: &str| {
        ImageBuilder::new()
            .arch(arch)
            .layer(Layer::gzip([
                Entry::dir("etc"),
                Entry::file("etc/arch", arch),
            ]))
            .build()
    };
    let index = Image::index(vec![arch_image("amd64"), arch_image("arm64")]);
    reg.push(&index, "multiarch:v1");
    let reference = reg.reference("multiarch:v1");
    let td = TestDir::new("multiarch");

    if matches!(host_arch(), "amd64" | "arm64") {
        let out = td.krunner().args(["pull", &reference]).run();
        let root = out.rootfs();
        assert_eq!(
            fs::read_to_string(root.join("etc/arch")).unwrap(),
            host_arch(),
            "{out}"
        );
        assert_eq!(
            canon(&root),
            canon(&expected_rootfs(
                &td.cache(),
                &index.manifest_for(host_arch()).desc.digest
            )),
            "rootfs is not named after the platform manifest\n{out}"
        );
    }

    let out = td
        .krunner()
        .args(["pull", "--platform", "linux/arm64", &reference])
        .run();
    let arm = out.rootfs();
    assert_eq!(
        fs::read_to_string(arm.join("etc/arch")).unwrap(),
        "arm64",
        "{out}"
    );
    assert_eq!(
        canon(&arm),
        canon(&expected_rootfs(
            &td.cache(),
            &index.manifest_for("arm64").desc.digest
        )),
        "{out}"
    );
    let by_env = td
        .krunner()
        .env("KRUNNER_PLATFORM", "linux/amd64")
        .args(["pull", &reference])
        .run();
    let amd = by_env.rootfs();
    assert_eq!(
        fs::read_to_string(amd.join("etc/arch")).unwrap(),
        "amd64",
        "{by_env}"
    );
    assert_ne!(amd, arm);

    let images = td.krunner().arg("images").run();
    images.success();
    for p in ["linux/amd64", "linux/arm64"] {
        assert!(
            images
                .stdout
                .lines()
                .any(|l| l.contains("multiarch") && l.contains(p)),
            "`images` has no multiarch row for {p}\n{images}"
        );
    }

    let none = td
        .krunner()
        .args(["pull", "--platform", "linux/s390x", &reference])
        .run();
    none.failure(1)
        .error_has("multiarch")
        .error_has("linux/amd64")
        .error_has("linux/arm64");
}

#[test]
fn short_names_use_the_image_repo() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    reg.push(&tagged_image("ubuntu"), "ci/runner-ubuntu:latest");
    reg.push(&tagged_image("fedora"), "ci/runner-fedora:latest");
    let repo = reg.reference("ci");
    let td = TestDir::new("shortname");

    let out = td
        .krunner()
        .args(["pull", "--image-repo", &repo, "ubuntu"])
        .run();
    let root = out.rootfs();
    assert_eq!(
        fs::read_to_string(root.join("etc/tag")).unwrap(),
        "ubuntu",
        "{out}"
    );
    assert_eq!(reg.count("GET", "/v2/ci/runner-ubuntu/manifests/latest"), 1);

    let out = td
        .krunner()
        .env("KRUNNER_IMAGE_REPO", &repo)
        .args(["pull", "fedora"])
        .run();
    assert_eq!(
        fs::read_to_string(out.rootfs().join("etc/tag")).unwrap(),
        "fedora",
        "{out}"
    );
}

#[test]
fn digest_references_are_pulled_and_checked() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    let image = tagged_image("by digest");
    reg.push(&image, "digest-ref:v1");
    let digest = reg.digest_of("digest-ref", "v1");
    assert_eq!(digest, image.top.digest, "skopeo rewrote the manifest");
    let td = TestDir::new("digest");
    let cache = td.join("other-cache");

    let out = td
        .krunner()
        .env_remove("KRUNNER_CACHE_DIR")
        .arg("--cache-dir")
        .arg(&cache)
        .args(["pull", &reg.reference(&format!("digest-ref@{digest}"))])
        .run();
    let root = out.rootfs();
    assert_eq!(
        canon(&root),
        canon(&expected_rootfs(&cache, &digest)),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/tag")).unwrap(),
        "by digest"
    );

    let unknown = sha256_digest(b"no such manifest");
    td.krunner()
        .args(["pull", &reg.reference(&format!("digest-ref@{unknown}"))])
        .run()
        .failure(1)
        .error_has("digest-ref");
}

#[test]
fn htpasswd_registry_needs_credentials_and_never_shows_them() {
    if skip(REGISTRY) || skip(&[Need::Tool("htpasswd")]) {
        return;
    }
    let (user, pass) = ("alice", "s3cret-PW-1234");
    let reg = Registry::start(Some((user, pass)));
    reg.push(&tagged_image("private"), "private/img:v1");
    let reference = reg.reference("private/img:v1");
    let td = TestDir::new("htpasswd");
    let encoded = basic_auth_value(user, pass);

    let out = td.krunner().args(["-v", "pull", &reference]).run();
    out.failure(1).error_has("private/img").error_has_any(&[
        "auth",
        "401",
        "credential",
        "unauthorized",
        "denied",
    ]);

    let auth = write_auth_file(&td.join("auth.json"), reg.host(), user, pass);
    let out = td
        .krunner()
        .env("REGISTRY_AUTH_FILE", &auth)
        .args(["-v", "pull", &reference])
        .run();
    let root = out.rootfs();
    out.never_shows(pass).never_shows(&encoded);
    assert_eq!(fs::read_to_string(root.join("etc/tag")).unwrap(), "private");

    // ~/.docker/config.json works too (a fresh cache, so it must really fetch).
    write_auth_file(
        &td.home().join(".docker/config.json"),
        reg.host(),
        user,
        pass,
    );
    let out = td
        .krunner()
        .env("KRUNNER_CACHE_DIR", td.join("cache2"))
        .args(["-v", "pull", &reference])
        .run();
    out.rootfs();
    out.never_shows(pass).never_shows(&encoded);

    // A wrong password fails, and is not shown either.
    let wrong = "wr0ng-PW-5678";
    let bad = write_auth_file(&td.join("bad.json"), reg.host(), user, wrong);
    let out = td
        .krunner()
        .env("REGISTRY_AUTH_FILE", &bad)
        .env("KRUNNER_CACHE_DIR", td.join("cache3"))
        .args(["-v", "pull", &reference])
        .run();
    out.failure(1)
        .error_has("private/img")
        .never_shows(wrong)
        .never_shows(&basic_auth_value(user, wrong));
}

#[test]
fn bearer_token_flow() {
    let (user, pass) = ("bob", "t0ken-PASS-987");
    let fake = FakeRegistry::with_bearer(user, pass);
    let image = tagged_image("bearer");
    fake.add("bearer/img", "v1", &image);
    let reference = fake.reference("bearer/img:v1");
    let td = TestDir::new("bearer");

    td.krunner()
        .args(["pull", &reference])
        .run()
        .failure(1)
        .error_has("bearer/img");
    assert_eq!(fake.tokens_issued(), 0);

    let auth = write_auth_file(&td.join("auth.json"), fake.host(), user, pass);
    let out = td
        .krunner()
        .env("REGISTRY_AUTH_FILE", &auth)
        .args(["-v", "pull", &reference])
        .run();
    let root = out.rootfs();
    out.never_shows(pass)
        .never_shows(&basic_auth_value(user, pass));
    assert_eq!(fs::read_to_string(root.join("etc/tag")).unwrap(), "bearer");
    assert!(
        fake.tokens_issued() >= 1,
        "no token was requested: {:?}",
        fake.requests()
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("GET /token?") && r.contains("repository")),
        "the token request has no scope: {:?}",
        fake.requests()
    );
    for d in image.pulled_blobs() {
        assert_eq!(
            fake.count(&format!("GET /v2/bearer/img/blobs/{d}")),
            1,
            "blob {d}: {:?}",
            fake.requests()
        );
    }

    let wrong = "not-the-PASS-000";
    let bad = write_auth_file(&td.join("bad.json"), fake.host(), user, wrong);
    td.krunner()
        .env("REGISTRY_AUTH_FILE", &bad)
        .env("KRUNNER_CACHE_DIR", td.join("cache2"))
        .args(["-v", "pull", &reference])
        .run()
        .failure(1)
        .never_shows(wrong);
}

#[test]
fn concurrent_pulls_share_one_download_per_blob() {
    if skip(REGISTRY) || skip(&[Need::Tool("busybox")]) {
        return;
    }
    let reg = Registry::shared();
    let image = ImageBuilder::new()
        .layer(Layer::gzip(busybox_entries().to_vec()))
        .layer(Layer::gzip([Entry::file("etc/motd", "concurrent\n")]))
        .layer(Layer::new(
            &Tar::new()
                .with([Entry::file("data", vec![7u8; 3 << 20])])
                .finish(),
            Compression::None,
        ))
        .build();
    reg.push(&image, "concurrent:v1");
    let reference = reg.reference("concurrent:v1");
    let td = TestDir::new("concurrent");

    let a = td.krunner().args(["pull", &reference]).spawn();
    let b = td.krunner().args(["pull", &reference]).spawn();
    let (a, b) = (a.wait(), b.wait());
    let (ra, rb) = (a.rootfs(), b.rootfs());
    assert_eq!(ra, rb, "two pulls gave different paths\n{a}\n{b}");
    assert_eq!(
        fs::read_to_string(ra.join("etc/motd")).unwrap(),
        "concurrent\n"
    );
    for d in image.pulled_blobs() {
        let n = reg.count("GET", &format!("/v2/concurrent/blobs/{d}"));
        assert_eq!(n, 1, "blob {d} fetched {n} times\n{a}\n{b}");
    }
    assert_eq!(
        crate::util::list_names(&td.cache().join("rootfs")).len(),
        1,
        "one rootfs expected"
    );
}

#[test]
fn gzip_zstd_and_uncompressed_layers() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    let tar = |name: &str, text: &str| {
        Tar::new()
            .with([
                Entry::dir("layers"),
                Entry::file(format!("layers/{name}"), text),
            ])
            .finish()
    };
    let image = ImageBuilder::new()
        .layer(Layer::new(&tar("gzip", "from gzip"), Compression::Gzip))
        .layer(Layer::new(&tar("zstd", "from zstd"), Compression::Zstd))
        .layer(Layer::new(&tar("plain", "from tar"), Compression::None))
        .layer(Layer::new(
            &tar("gzip", "gzip, replaced by zstd"),
            Compression::Zstd,
        ))
        .build();
    reg.push(&image, "compressions:v1");
    let td = TestDir::new("compressions");
    let out = td
        .krunner()
        .args(["pull", &reg.reference("compressions:v1")])
        .run();
    let root = out.rootfs();
    let read = |n: &str| fs::read_to_string(root.join("layers").join(n)).unwrap();
    assert_eq!(read("gzip"), "gzip, replaced by zstd", "{out}");
    assert_eq!(read("zstd"), "from zstd");
    assert_eq!(read("plain"), "from tar");
}

#[test]
fn whiteouts_and_opaque_directories_across_layers() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    let image = Image::of_layers(vec![
        vec![
            Entry::dir("a"),
            Entry::file("a/keep", "keep"),
            Entry::file("a/gone", "gone"),
            Entry::dir("a/gonedir"),
            Entry::file("a/gonedir/inner", "inner"),
            Entry::dir("opq"),
            Entry::file("opq/old", "old"),
            Entry::dir("opq/olddir"),
            Entry::file("opq/olddir/deep", "deep"),
            Entry::symlink("opq/oldlink", "old"),
        ],
        vec![
            Entry::whiteout("a/gone"),
            Entry::whiteout("a/gonedir"),
            // Entries of the same layer survive the opaque marker wherever they come.
            Entry::file("opq/before", "before"),
            Entry::opaque("opq"),
            Entry::file("opq/after", "after"),
        ],
        vec![Entry::file("a/gone", "back again")],
    ]);
    reg.push(&image, "whiteouts:v1");
    let td = TestDir::new("whiteouts");
    let out = td
        .krunner()
        .args(["pull", &reg.reference("whiteouts:v1")])
        .run();
    let root = out.rootfs();
    let mut a = crate::util::list_names(&root.join("a"));
    a.sort();
    assert_eq!(a, vec!["gone", "keep"], "{out}");
    assert_eq!(
        fs::read_to_string(root.join("a/gone")).unwrap(),
        "back again"
    );
    assert_eq!(
        crate::util::list_names(&root.join("opq")),
        vec!["after", "before"],
        "opaque dir\n{out}"
    );
    let leftovers = crate::util::find_named(&root, ".wh.");
    assert!(
        leftovers.is_empty(),
        "whiteouts materialised: {leftovers:?}"
    );
}

#[test]
fn hardlinks_within_and_across_layers() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    let image = Image::of_layers(vec![
        vec![
            Entry::dir("data"),
            Entry::file("data/orig", "shared content").mode(0o640),
            Entry::hardlink("data/same-layer", "data/orig"),
        ],
        vec![
            Entry::dir("other"),
            Entry::hardlink("other/lower-layer", "data/orig"),
        ],
    ]);
    reg.push(&image, "hardlinks:v1");
    let td = TestDir::new("hardlinks");
    let out = td
        .krunner()
        .args(["pull", &reg.reference("hardlinks:v1")])
        .run();
    let root = out.rootfs();
    let orig = node(&root.join("data/orig"));
    for p in ["data/same-layer", "other/lower-layer"] {
        let n = node(&root.join(p));
        assert_eq!(n.kind, Kind::File, "{p}");
        assert_eq!(
            n.ino, orig.ino,
            "{p} is not a hard link of data/orig\n{out}"
        );
    }
    assert_eq!(orig.nlink, 3);
    assert_eq!(orig.mode, 0o640);
    assert_eq!(
        fs::read_to_string(root.join("other/lower-layer")).unwrap(),
        "shared content"
    );
}

#[test]
fn usage_errors_exit_2() {
    let td = TestDir::new("usage");
    td.krunner().arg("pull").run().failure(2);
    td.krunner()
        .args(["pull", "--no-such-flag", "x"])
        .run()
        .failure(2);
    td.krunner().arg("no-such-command").run().failure(2);
}

#[test]
fn missing_image_fails_naming_it() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    let td = TestDir::new("missing");
    let out = td
        .krunner()
        .args(["pull", &reg.reference("never-pushed/image:v9")])
        .run();
    out.failure(1).error_has("never-pushed/image");
    assert!(
        out.stdout.is_empty(),
        "stdout must stay empty on error\n{out}"
    );
    assert!(crate::util::list_names(&td.cache().join("rootfs")).is_empty());
}

#[test]
fn wrong_diff_id_is_refused() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    let image = ImageBuilder::new()
        .layer(Layer::gzip([Entry::file("ok", "ok")]))
        .layer(Layer::gzip([Entry::file(
            "lying",
            "diff_id does not match",
        )]))
        .bad_diff_id(1)
        .build();
    reg.push(&image, "bad-diffid:v1");
    let td = TestDir::new("diffid");
    let out = td
        .krunner()
        .args(["pull", &reg.reference("bad-diffid:v1")])
        .run();
    out.failure(1).error_has("bad-diffid");
    crate::unpack_hostile::assert_names_layer(&out, &image.manifest().layers[1]);
    crate::util::assert_cache_clean(&td.cache(), &[], &out);
}

#[test]
fn prune_removes_unreferenced_blobs_and_unused_rootfs() {
    if skip(REGISTRY) {
        return;
    }
    let reg = Registry::shared();
    reg.push(&tagged_image("prune"), "prune-img:v1");
    let reference = reg.reference("prune-img:v1");
    let td = TestDir::new("prune");
    let root = td.krunner().args(["pull", &reference]).run().rootfs();

    let garbage = b"an unreferenced blob";
    let garbage_path = td
        .cache()
        .join("blobs/sha256")
        .join(&sha256_digest(garbage)["sha256:".len()..]);
    fs::write(&garbage_path, garbage).unwrap();
    let out = td.krunner().arg("prune").run();
    out.success();
    assert!(
        !garbage_path.exists(),
        "prune kept an unreferenced blob\n{out}"
    );
    assert!(root.is_dir(), "prune removed a referenced rootfs\n{out}");
    let offline = td.krunner().args(["pull", "--offline", &reference]).run();
    assert_eq!(offline.rootfs(), root);

    let out = td.krunner().args(["prune", "--all"]).run();
    out.success();
    assert!(!root.exists(), "prune --all kept an unused rootfs\n{out}");
    assert_eq!(td.krunner().args(["pull", &reference]).run().rootfs(), root);
}
