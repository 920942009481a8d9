//! The actions runner provided by the host (`--runner`, `--runner-version`,
//! `--runner-releases-url`): `krunner run` under the namespace backend against the GitHub
//! simulator, which also serves the releases API and stand-in runner tarballs (the real layout,
//! checksums in the release notes). Each stand-in listener is the one of `run_e2e`, marked: it
//! records which runner ran (`/record/NAME.who`) and what its environment said about
//! globalization and the image's runner.env (`/record/NAME.env`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::run_e2e::{fixture, Fixture, NEEDS};
use crate::util::github_sim::{runner_asset_name, stand_in_release, GitHubSim, SimRelease};
use crate::util::oci::{busybox_entries, Entry, Image};
use crate::util::registry::Registry;
use crate::util::*;

/// The run_e2e stand-in, recording `who` and its environment.
fn listener(who: &str) -> String {
    let base = crate::run_e2e::LISTENER;
    let at = "echo \"$url\" > \"/record/$name\"\n";
    assert!(base.contains(at), "the stand-in changed");
    base.replacen(
        at,
        &format!(
            "{at}echo {who} > \"/record/$name.who\"\necho \"icu=${{DOTNET_SYSTEM_GLOBALIZATION_INVARIANT:-unset}} cache=${{RUNNER_TOOL_CACHE:-unset}} pwd=$(pwd)\" > \"/record/$name.env\"\n[ ! -e image-only ] || echo yes > \"/record/$name.stale\"\n"
        ),
        1,
    )
}

/// An image with only its OS: busybox, the runner user (uid 1001), runner.env; optionally a
/// libicu (a placeholder file: the agent only looks for it) and a runner of its own at `own`.
fn image(tag: &str, own: Option<&str>, icu: bool) -> String {
    let passwd = "root:x:0:0:root:/root:/bin/sh\nrunner:x:1001:1001:runner:/home/runner:/bin/sh\n";
    let group = "root:x:0:\nrunner:x:1001:\ndocker:x:121:runner\n";
    let mut layer = vec![
        Entry::file("etc/passwd", passwd),
        Entry::file("etc/group", group),
        Entry::dir("etc/krunner"),
        Entry::file(
            "etc/krunner/runner.env",
            "# tool cache\nRUNNER_TOOL_CACHE=/opt/hostedtoolcache\nbad-name=x\n",
        ),
        Entry::dir("home/runner").mode(0o750).owner(1001, 1001),
    ];
    if icu {
        layer.push(Entry::dir("usr/lib"));
        layer.push(Entry::file("usr/lib/libicuuc.so.72", "placeholder"));
    }
    if let Some(root) = own {
        let r = root.trim_start_matches('/');
        if r.starts_with("opt/") {
            layer.push(Entry::dir("opt"));
            layer.push(Entry::dir(r).owner(1001, 1001));
        }
        layer.push(Entry::dir(format!("{r}/bin")).owner(1001, 1001));
        layer.push(
            Entry::file(
                format!("{r}/bin/Runner.Listener"),
                listener(&format!("image-{r}")),
            )
            .mode(0o755)
            .owner(1001, 1001),
        );
        layer.push(Entry::file(format!("{r}/image-only"), "from the image"));
        layer.push(Entry::file(
            format!("{r}/bin/Runner.Listener.deps.json"),
            "{\"libraries\": {\"Runner.Listener/2.300.0\": {}}}",
        ));
    }
    // Tests run in parallel and share tags: each is pushed once, by one test at a time.
    static PUSHED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let reg = Registry::shared();
    let mut pushed = PUSHED.lock().unwrap_or_else(|e| e.into_inner());
    if !pushed.iter().any(|t| t == tag) {
        reg.push(
            &Image::of_layers(vec![busybox_entries().to_vec(), layer]),
            tag,
        );
        pushed.push(tag.to_string());
    }
    reg.reference(tag)
}

fn days_ago(d: u64) -> u64 {
    krunner::image::cache::now_secs() - d * 86_400
}

fn release(v: &str, days: u64) -> SimRelease {
    stand_in_release(v, days_ago(days), &listener(&format!("provided-{v}")))
}

/// `krunner run` with runner names `PREFIX-SLOT-SEQ`: each start of a test gets its own
/// prefix, since names start again at 1 once the previous start's registrations are gone.
fn run(f: &Fixture, image: &str, prefix: &str, extra: &[&str]) -> Krunner {
    let mut k = f.td.krunner();
    k.env("KRUNNER_TOKEN", "e2e-token").args([
        "run",
        "--backend",
        "namespace",
        "--api-url",
        &f.sim.api_url(),
        "-p",
        "owner/repo",
        "-i",
        image,
        "--name-prefix",
        prefix,
        "--log-dir",
        f.td.join("logs").to_str().unwrap(),
        "-M",
        &format!("{}:/record", f.record.display()),
        "-M",
        &format!("{}:/mode:ro", f.mode.display()),
        "--runner-releases-url",
        &f.sim.runner_releases_url(),
    ]);
    k.args(extra);
    k
}

fn read(f: &Fixture, file: &str) -> String {
    std::fs::read_to_string(f.record.join(file))
        .unwrap_or_else(|_| format!("(no {file})"))
        .trim()
        .to_string()
}

/// The SHA-256s of the runners in the cache.
fn cached_runners(cache: &Path) -> Vec<String> {
    list_names(&cache.join("runners"))
}

fn x64(v: &str) -> String {
    runner_asset_name("linux-x64", v)
}

fn sha_of(sim_release: &SimRelease) -> String {
    crate::util::github_sim::sha256_hex(&sim_release.assets[0].1)
}

#[test]
fn an_image_with_only_its_os_runs_jobs_with_the_latest_provided_runner() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("prov-latest");
    f.sim.add_runner_release(release("2.329.0", 40));
    f.sim.add_runner_release(release("2.330.0", 3));
    let img = image("prov-os-only:v1", None, false);
    let out = run(&f, &img, "a", &["-n", "1", "-r", "1"]).run();
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    out.success();
    assert_eq!(read(&f, "a-0-1.who"), "provided-2.330.0", "{ctx}");
    // busybox has no libicu: the agent sets invariant globalization; runner.env reaches the
    // runner, its bad line does not; the runner runs from its directory.
    assert_eq!(
        read(&f, "a-0-1.env"),
        "icu=1 cache=/opt/hostedtoolcache pwd=/opt/actions-runner",
        "{ctx}"
    );
    assert_eq!(f.sim.asset_downloads(&x64("2.330.0")), 1, "{ctx}");
    assert_eq!(
        f.sim
            .asset_downloads(&runner_asset_name("linux-arm64", "2.330.0")),
        0
    );
    assert!(f.sim.runners().is_empty(), "{ctx}");
    let images = f.td.krunner().arg("images").run();
    images.success();
    assert!(
        images.stdout.contains("2.330.0") && images.stdout.contains("linux-x64"),
        "{images}"
    );

    // A second start finds it in the cache: no download; --offline needs no listing at all.
    let out = run(&f, &img, "b", &["-n", "1", "-r", "1"]).run();
    out.success();
    assert_eq!(f.sim.asset_downloads(&x64("2.330.0")), 1, "{out}");
    f.sim.clear_log();
    let out = run(&f, &img, "c", &["-n", "1", "-r", "1", "--offline"]).run();
    out.success();
    assert_eq!(
        f.sim.count("GET", "/repos/actions/runner/releases"),
        0,
        "{out}"
    );
    assert_eq!(read(&f, "c-0-1.who"), "provided-2.330.0", "{out}");
}

#[test]
fn a_pinned_version_is_used_and_a_bad_checksum_caches_nothing() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("prov-pin");
    f.sim.add_runner_release(release("2.329.0", 40));
    let mut bad = release("2.330.0", 3);
    bad.assets[0].1.push(0); // the tarball no longer matches the release notes
    f.sim.add_runner_release(bad);
    let img = image("prov-icu:v1", None, true);

    let out = run(&f, &img, "a", &["-n", "1", "-r", "1"]).run();
    assert_ne!(out.code, Some(0), "{out}");
    assert!(
        out.stderr.contains("2.330.0")
            && out.stderr.contains(&x64("2.330.0"))
            && out.stderr.contains("SHA-256"),
        "the error names the version and the asset\n{out}"
    );
    let cache = f.td.cache();
    assert!(cached_runners(&cache).is_empty(), "{out}");
    for d in ["ingest", "tmp"] {
        assert!(list_names(&cache.join(d)).is_empty(), "{d} left\n{out}");
    }
    assert!(
        f.sim.runners().is_empty(),
        "no registration was made\n{out}"
    );

    let out = run(
        &f,
        &img,
        "b",
        &["-n", "1", "-r", "1", "--runner-version", "2.329.0"],
    )
    .run();
    out.success();
    assert_eq!(read(&f, "b-0-1.who"), "provided-2.329.0", "{out}");
    assert_eq!(
        read(&f, "b-0-1.env"),
        "icu=unset cache=/opt/hostedtoolcache pwd=/opt/actions-runner",
        "an image with libicu keeps .NET's globalization\n{out}"
    );
    let out = run(&f, &img, "c", &["-n", "1", "--runner-version", "2.1.0"]).run();
    assert_ne!(out.code, Some(0), "{out}");
    assert!(
        out.stderr.contains("2.1.0 is not among the releases"),
        "{out}"
    );
    let out =
        f.td.krunner()
            .args(["run", "-p", "o/r", "--runner-version", "2.x"])
            .run();
    assert_eq!(out.code, Some(2), "{out}");
}

#[test]
fn auto_takes_the_images_own_runner_provided_replaces_it_and_image_requires_one() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("prov-choice");
    f.sim.add_runner_release(release("2.330.0", 3));
    let own = image("prov-own:v1", Some("/opt/actions-runner"), false);
    let out = run(&f, &own, "a", &["-n", "1", "-r", "1"]).run();
    out.success();
    assert_eq!(read(&f, "a-0-1.who"), "image-opt/actions-runner", "{out}");
    assert_eq!(f.sim.asset_downloads(&x64("2.330.0")), 0, "{out}");
    // The image's runner 2.300.0 is far behind 2.330.0? Only 3 days: GitHub still takes it.
    assert!(!out.stderr.contains("no longer accepts"), "{out}");

    let out = run(
        &f,
        &own,
        "b",
        &["-n", "1", "-r", "1", "--runner", "provided"],
    )
    .run();
    out.success();
    assert_eq!(read(&f, "b-0-1.who"), "provided-2.330.0", "{out}");
    // The provided directory hides the image's: nothing of the image's runner shows through.
    assert_eq!(
        read(&f, "a-0-1.stale"),
        "yes",
        "the probe sees the image's files"
    );
    assert_eq!(read(&f, "b-0-1.stale"), "(no b-0-1.stale)", "{out}");

    // GitHub's image keeps its runner in /home/runner.
    let gh = image("prov-gh-shape:v1", Some("/home/runner"), false);
    let out = run(&f, &gh, "c", &["-n", "1", "-r", "1", "--runner", "image"]).run();
    out.success();
    assert_eq!(read(&f, "c-0-1.who"), "image-home/runner", "{out}");
    assert_eq!(
        read(&f, "c-0-1.env"),
        "icu=1 cache=/opt/hostedtoolcache pwd=/home/runner",
        "{out}"
    );

    let bare = image("prov-os-only:v1", None, false);
    let out = run(&f, &bare, "d", &["-n", "1", "--runner", "image"]).run();
    assert_ne!(out.code, Some(0), "{out}");
    assert!(
        out.stderr.contains("has no actions runner") && out.stderr.contains(&bare),
        "{out}"
    );
}

#[test]
fn an_image_runner_older_than_github_accepts_is_reported_at_start() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("prov-stale");
    f.sim.add_runner_release(release("2.310.0", 90));
    f.sim.add_runner_release(release("2.330.0", 1));
    let own = image("prov-own:v1", Some("/opt/actions-runner"), false);
    let out = run(&f, &own, "a", &["-n", "1", "-r", "1"]).run();
    out.success();
    assert!(
        out.stderr.contains("2.300.0") && out.stderr.contains("no longer accepts"),
        "{out}"
    );
}

#[test]
fn a_new_release_reaches_the_next_guest_without_a_restart_and_the_old_one_goes() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("prov-update");
    let first = release("2.330.0", 3);
    let old_sha = sha_of(&first);
    f.sim.add_runner_release(first);
    std::fs::write(f.mode.join("busy"), "3").unwrap();
    let img = image("prov-os-only:v1", None, false);
    let running = run(
        &f,
        &img,
        "a",
        &["-n", "1", "-r", "3", "--runner-check-interval", "1"],
    )
    .spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f.record.join("a-0-1.who").exists() {
        assert!(Instant::now() < deadline, "the first runner never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = release("2.331.0", 0);
    let new_sha = sha_of(&second);
    f.sim.add_runner_release(second);
    let out = running.wait();
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    out.success();
    assert_eq!(read(&f, "a-0-1.who"), "provided-2.330.0", "{ctx}");
    assert_eq!(read(&f, "a-0-3.who"), "provided-2.331.0", "{ctx}");
    assert!(
        out.stderr
            .contains("new guests get the actions runner 2.331.0"),
        "{ctx}"
    );
    let cached = cached_runners(&f.td.cache());
    assert_eq!(
        cached,
        vec![new_sha.clone()],
        "the unused 2.330.0 is pruned\n{ctx}"
    );
    assert_ne!(old_sha, new_sha);
}

#[test]
fn the_arm64_tarball_is_chosen_for_an_arm64_guest() {
    if skip(&[Need::Root]) {
        return;
    }
    use krunner::runner::store::RunnerStore;
    use krunner::runner::supply::{provision, Source};
    use krunner::runner::{Arch, Wanted};
    let td = TestDir::new("prov-arm64");
    let sim = GitHubSim::start();
    sim.add_runner_release(release("2.330.0", 3));
    let cache = krunner::image::cache::Cache::open(&td.cache()).unwrap();
    let store = RunnerStore::new(cache);
    let src = Source {
        releases_url: sim.runner_releases_url(),
        wanted: Wanted::Latest,
        arch: Arch::Arm64,
        offline: false,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = krunner::runner::releases::client().unwrap();
    let (supply, _updater) = rt.block_on(provision(&store, &http, &src)).unwrap();
    let got = supply.current().installed.clone();
    assert_eq!(got.arch, Arch::Arm64);
    assert_eq!(
        sim.asset_downloads(&runner_asset_name("linux-arm64", "2.330.0")),
        1
    );
    assert_eq!(sim.asset_downloads(&x64("2.330.0")), 0);
    let deps = std::fs::read_to_string(
        got.tree
            .join("opt/actions-runner/bin/Runner.Listener.deps.json"),
    )
    .unwrap();
    assert!(deps.contains("linux-arm64"), "{deps}");
}

#[test]
fn a_download_cut_short_or_refused_leaves_nothing_and_the_cached_runner_serves() {
    if skip(NEEDS) {
        return;
    }
    use crate::util::github_sim::{runner_asset_path, Fault};
    let f = fixture("prov-cut");
    f.sim.add_runner_release(release("2.329.0", 40));
    let img = image("prov-os-only:v1", None, false);
    run(&f, &img, "a", &["-n", "1", "-r", "1"]).run().success();
    f.sim.add_runner_release(release("2.330.0", 3));
    f.sim.fail_next(
        "GET",
        &runner_asset_path("2.330.0", &x64("2.330.0")),
        1,
        Fault::CutBody { after: 1000 },
    );
    let out = run(&f, &img, "b", &["-n", "1", "-r", "1"]).run();
    out.success();
    assert!(
        out.stderr.contains("the cache's 2.329.0 serves meanwhile"),
        "{out}"
    );
    assert_eq!(read(&f, "b-0-1.who"), "provided-2.329.0", "{out}");
    let cache = f.td.cache();
    assert_eq!(cached_runners(&cache).len(), 1, "{out}");
    for d in ["ingest", "tmp"] {
        assert!(list_names(&cache.join(d)).is_empty(), "{d} left\n{out}");
    }
}
