//! The network jail, tried as a hostile job would: from inside a guest, probe the host's
//! loopback, its other addresses, private and metadata addresses and a public one, in a world
//! of network namespaces the test makes itself (`jail_net.sh`); then two guests listening on
//! one port. The same checks run under the namespace backend here and in real microVMs
//! (`krun_guest::exec_jail_*`, through the same functions).

use std::ffi::OsStr;
use std::path::Path;

use crate::util::oci::busybox_image;
use crate::util::registry::Registry;
use crate::util::*;

/// What the jail tests need besides a registry.
pub const JAIL: &[Need] = &[
    Need::Root,
    Need::Tool("docker-registry"),
    Need::Tool("skopeo"),
    Need::Tool("busybox"),
    Need::Tool("pasta"),
    Need::Tool("unshare"),
    Need::Tool("nsenter"),
    Need::Tool("ip"),
    Need::Tool("ss"),
];

pub fn image() -> String {
    let reg = Registry::shared();
    static PUSHED: std::sync::Once = std::sync::Once::new();
    PUSHED.call_once(|| reg.push(busybox_image(), "jail-busybox:v1"));
    reg.reference("jail-busybox:v1")
}

/// The guest's probes: each prints `probe NAME=BODY`, `none` when nothing answered.
const PROBES: &str = r#"
probe() { r=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc "$1" "$2" 2>/dev/null | tail -n 1); echo "probe $3=${r:-none}"; }
probe 203.0.113.10 8080 public
probe 10.1.2.3 8080 allowed-private
probe 10.9.9.9 8080 private
probe 169.254.169.254 8080 metadata
probe 127.0.0.1 8081 host-loopback
probe 127.0.0.1 8082 allowed-loopback
probe 198.51.100.7 8083 host-address
probe 192.0.2.2 8083 host-main-address
grep CapBnd /proc/self/status
"#;

/// The command that runs what follows it inside the test's network world (see
/// `jail_net.sh`), mode `once` or `pair`.
pub fn world(td: &TestDir, mode: &str) -> Vec<std::ffi::OsString> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/jail_net.sh");
    [
        OsStr::new("unshare"),
        OsStr::new("--net"),
        OsStr::new("--mount"),
        OsStr::new("--propagation"),
        OsStr::new("private"),
        OsStr::new("sh"),
        script.as_os_str(),
        td.path().as_os_str(),
        OsStr::new(mode),
    ]
    .map(OsStr::to_os_string)
    .to_vec()
}

/// `krunner ARGS` inside the test's network world, mode `once` or `pair`.
fn in_world(td: &TestDir, mode: &str) -> Krunner {
    let w = world(td, mode);
    let w: Vec<&OsStr> = w.iter().map(|a| a.as_os_str()).collect();
    Krunner::wrapped(td, &w)
}

/// What each probe got.
fn probes(out: &Outcome) -> std::collections::BTreeMap<String, String> {
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("probe "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Runs the probes in a guest under `policy` (`public` with two exceptions, or `open`), with
/// `backend_args` (the backend and its options) before the image, in `cache`.
pub fn probe_guest(
    td: &TestDir,
    cache: &Path,
    image: &str,
    backend_args: &[&str],
    policy: &str,
) -> Outcome {
    probe_guest_with(in_world(td, "once"), cache, image, backend_args, policy)
}

/// [`probe_guest`] with a krunner command of the caller's (inside [`world`], mode `once`).
pub fn probe_guest_with(
    mut k: Krunner,
    cache: &Path,
    image: &str,
    backend_args: &[&str],
    policy: &str,
) -> Outcome {
    k.env("KRUNNER_CACHE_DIR", cache)
        .args(["exec", "--offline"])
        .args(backend_args)
        .args(["--egress-policy", policy])
        .args([
            "--egress-allow",
            "127.0.0.1:8082",
            "--egress-allow",
            "10.1.2.3:8080",
        ])
        .args([image, "--", "sh", "-c", PROBES]);
    k.run()
}

/// The jailed guest reaches exactly the public address and the two exceptions.
pub fn assert_jailed(out: &Outcome) {
    let got = probes(out);
    let want = [
        ("public", "WORLD"),
        ("allowed-private", "WORLD"),
        ("private", "none"),
        ("metadata", "none"),
        ("host-loopback", "none"),
        ("allowed-loopback", "ALLOWED"),
        ("host-address", "none"),
        ("host-main-address", "none"),
    ];
    for (k, v) in want {
        assert_eq!(got.get(k).map(String::as_str), Some(v), "probe {k}\n{out}");
    }
}

/// Without the jail every probe answers: the probes can tell.
pub fn assert_open(out: &Outcome) {
    let got = probes(out);
    for (k, v) in [
        ("public", "WORLD"),
        ("private", "WORLD"),
        ("metadata", "WORLD"),
        ("host-loopback", "SECRET"),
        ("host-address", "HOST"),
    ] {
        assert_eq!(got.get(k).map(String::as_str), Some(v), "probe {k}\n{out}");
    }
}

/// Two guests listen on port 8090 at once; each reaches its own listener on its loopback, and
/// nothing listens on 8090 on the host.
pub fn two_guests_one_port(td: &TestDir, cache: &Path, image: &str, backend_args: &[&str]) {
    for g in ["g1", "g2"] {
        std::fs::create_dir_all(td.join(g).join("www")).unwrap();
        std::fs::write(td.join(g).join("www/index.html"), format!("GUEST-{g}\n")).unwrap();
    }
    let guest = r#"
busybox httpd -f -p 8090 -h /s/www &
i=0; until printf 'GET / HTTP/1.0\r\n\r\n' | timeout 2 nc 127.0.0.1 8090 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 100 ] || break; sleep 0.1; done
echo up > /s/state
i=0; until [ -e /s/go ]; do i=$((i+1)); [ $i -lt 600 ] || break; sleep 0.1; done
r=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc 127.0.0.1 8090 | tail -n 1)
echo "self=$r"
kill %1
"#;
    let mut k = in_world(td, "pair");
    k.env("KRUNNER_CACHE_DIR", cache)
        .args(["exec", "--offline"])
        .args(backend_args)
        .args([image, "--", "sh", "-c", guest]);
    let out = k.run();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("self=GUEST-g1"), "{out}");
    assert!(out.stdout.contains("self=GUEST-g2"), "{out}");
    let listeners = std::fs::read_to_string(td.join("host-listeners")).unwrap_or_default();
    assert_eq!(
        listeners.trim(),
        "",
        "a guest's listener was published on the host\n{out}"
    );
}

fn pulled(td: &TestDir) -> String {
    let image = image();
    td.krunner().args(["pull", &image]).run().success();
    image
}

#[test]
fn ns_jailed_guest_reaches_public_and_allowed_addresses_only() {
    if skip(JAIL) {
        return;
    }
    let td = TestDir::new("jail-ns-probe");
    let image = pulled(&td);
    let ns = ["--backend", "namespace"];
    let out = probe_guest(&td, &td.cache(), &image, &ns, "public");
    assert_jailed(&out);
    // Root in the guest, but unable to touch its namespace's rules.
    let bnd = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no CapBnd\n{out}"));
    assert_eq!(
        bnd & (1 << 12),
        0,
        "CAP_NET_ADMIN (12) in the bounding set\n{out}"
    );
    assert_ne!(bnd & (1 << 21), 0, "CAP_SYS_ADMIN kept\n{out}");
    assert!(list_names(&td.cache().join("runs")).is_empty());
}

#[test]
fn ns_open_policy_reaches_everything_and_says_so() {
    if skip(JAIL) {
        return;
    }
    let td = TestDir::new("jail-ns-open");
    let image = pulled(&td);
    let out = probe_guest(
        &td,
        &td.cache(),
        &image,
        &["--backend", "namespace"],
        "open",
    );
    assert_open(&out);
    assert!(out.stderr.contains("--egress-policy open"), "{out}");
}

#[test]
fn ns_two_guests_listen_on_one_port_and_the_host_sees_neither() {
    if skip(JAIL) {
        return;
    }
    let td = TestDir::new("jail-ns-pair");
    let image = pulled(&td);
    two_guests_one_port(&td, &td.cache(), &image, &["--backend", "namespace"]);
}

#[test]
fn bad_egress_allow_values_are_refused_before_anything_runs() {
    let td = TestDir::new("jail-bad-allow");
    for (value, needle) in [
        ("127.0.0.1", "one port at a time"),
        ("10.0.0.0/33", "expected ADDRESS"),
        ("10.1.2.3:0", "is not a port"),
        ("example.com", "expected ADDRESS"),
    ] {
        let out = td
            .krunner()
            .args([
                "exec",
                "--backend",
                "namespace",
                "--egress-allow",
                value,
                "busybox",
                "--",
                "true",
            ])
            .run();
        assert_eq!(out.code, Some(2), "{value}\n{out}");
        assert!(out.stderr.contains(needle), "{value}\n{out}");
    }
    assert!(!td.cache().join("runs").exists() || list_names(&td.cache().join("runs")).is_empty());
}
