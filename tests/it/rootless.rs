//! Rootless krunner: the ordinary user `krunner-rootless` (made by `tests/setup.sh`, with a
//! subordinate id range) pulls and runs guests under the namespace backend, jailed as root's
//! are; the image keeps its owners as the user's subordinate ids; a user without a range is
//! told how to get one. The test itself runs as root to prepare the user's directory.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::jail;
use crate::run_e2e;
use crate::util::*;

/// The user the tests run krunner as.
pub(crate) const USER: &str = "krunner-rootless";

/// What the rootless tests need.
const ROOTLESS: &[Need] = &[
    Need::Root,
    Need::Tool("docker-registry"),
    Need::Tool("skopeo"),
    Need::Tool("newuidmap"),
    Need::Tool("newgidmap"),
    Need::Tool("setpriv"),
    Need::Tool("pasta"),
    Need::Tool("nft"),
];

/// An ordinary user of this host.
pub(crate) struct User {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `name`, if it exists.
fn user(name: &str) -> Option<User> {
    let u = nix::unistd::User::from_name(name).ok().flatten()?;
    Some(User {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    })
}

/// The test user with its subordinate range, or a skip saying why not.
pub(crate) fn rootless_user() -> Option<User> {
    let has_range = |f: &str| {
        std::fs::read_to_string(f)
            .is_ok_and(|t| t.lines().any(|l| l.starts_with(&format!("{USER}:"))))
    };
    match user(USER) {
        Some(u) if has_range("/etc/subuid") && has_range("/etc/subgid") => Some(u),
        _ => {
            skip_because(&format!(
                "no user {USER} with a range in /etc/subuid and /etc/subgid (tests/setup.sh makes it)"
            ));
            None
        }
    }
}

/// Gives the test directory to `user`, with a copy of krunner it can run (the build tree may
/// be under a directory only root enters). Returns the copy.
pub(crate) fn hand_over(td: &TestDir, user: &User) -> PathBuf {
    let exe = td.join("bin/krunner");
    std::fs::create_dir_all(td.join("bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_krunner"), &exe).unwrap();
    run_tool(
        std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(td.path()),
    );
    exe
}

/// setpriv's arguments to become `user` (supplementary groups from /etc/group).
fn become_user(user: &User) -> Vec<OsString> {
    [
        "setpriv".to_string(),
        format!("--reuid={}", user.uid),
        format!("--regid={}", user.gid),
        "--init-groups".to_string(),
        "--".to_string(),
    ]
    .map(OsString::from)
    .to_vec()
}

/// Run as root before becoming the user: in a mount namespace of its own, a /dev/net/tun
/// everyone may open, as Debian's udev makes it, and a /dev/kvm everyone may open (our test
/// hosts keep both 0600 and have no kvm group; pasta opens the one as the user, the VMM the
/// other). The host's nodes are left alone.
fn open_tun() -> Vec<OsString> {
    let script = r#"set -e
d=$(mktemp -d)
mount -t tmpfs -o mode=0755 tmpfs "$d"
mknod -m 0666 "$d/tun" c 10 200
mount --bind "$d/tun" /dev/net/tun
if [ -e /dev/kvm ]; then
  mknod -m 0666 "$d/kvm" c 10 232
  mount --bind "$d/kvm" /dev/kvm
fi
exec "$@""#;
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ]
    .map(OsString::from)
    .to_vec()
}

/// `krunner` as `user`, after `pre` (a wrapper run as root, or nothing) and [`open_tun`].
pub(crate) fn as_user(td: &TestDir, user: &User, exe: &Path, pre: &[OsString]) -> Krunner {
    let wrapper: Vec<OsString> = pre
        .iter()
        .cloned()
        .chain(open_tun())
        .chain(become_user(user))
        .collect();
    let wrapper: Vec<&OsStr> = wrapper.iter().map(OsString::as_os_str).collect();
    Krunner::wrapped_exe(td, &wrapper, exe)
}

#[test]
fn rootless_a_namespace_guest_is_root_of_the_users_namespace_and_the_image_keeps_its_owners() {
    if skip(ROOTLESS) {
        return;
    }
    let Some(u) = rootless_user() else { return };
    let image = jail::image();
    let td = TestDir::new("rootless-exec");
    let exe = hand_over(&td, &u);
    let rootfs = as_user(&td, &u, &exe, &[])
        .args(["pull", &image])
        .run()
        .success()
        .rootfs();
    let guest = r#"
echo "uid=$(id -u)"
echo "owner=$(stat -c %u:%g /bin/busybox)"
echo x > /tmp/f && chown 4242:4243 /tmp/f && echo "chowned=$(stat -c %u:%g /tmp/f)"
echo "map=$(head -n 1 /proc/self/uid_map | tr -s ' ' | sed 's/^ //')"
exit 7
"#;
    let out = as_user(&td, &u, &exe, &[])
        .args(["exec", "--offline", "--backend", "namespace", &image])
        .args(["--", "sh", "-c", guest])
        .run();
    assert_eq!(out.code, Some(7), "{out}");
    for want in [
        "uid=0".to_string(),
        "owner=0:0".to_string(),
        "chowned=4242:4243".to_string(),
        // Guest root is the user: the first line of the map, as seen from inside.
        format!("map=0 {} 1", u.uid),
    ] {
        assert!(out.stdout.contains(&want), "{want}\n{out}");
    }
    // On the host the image's root files are the user's, not root's.
    let busybox = rootfs.join("bin/busybox");
    let m = std::fs::symlink_metadata(&busybox).unwrap();
    assert_eq!((m.uid(), m.gid()), (u.uid, u.gid), "{}", busybox.display());
    assert!(list_names(&td.cache().join("runs")).is_empty(), "{out}");
    // The user's prune removes what the user could not (files of its subordinate ids).
    as_user(&td, &u, &exe, &[])
        .args(["prune", "--all"])
        .run()
        .success();
    assert!(
        !rootfs.exists(),
        "{} left after prune --all",
        rootfs.display()
    );
}

#[test]
fn rootless_the_network_jail_holds_as_it_does_for_root() {
    if skip(ROOTLESS) || skip(jail::JAIL) {
        return;
    }
    let Some(u) = rootless_user() else { return };
    let image = jail::image();
    let td = TestDir::new("rootless-jail");
    let exe = hand_over(&td, &u);
    as_user(&td, &u, &exe, &[])
        .args(["pull", &image])
        .run()
        .success();
    let k = as_user(&td, &u, &exe, &jail::world(&td, "once"));
    let out = jail::probe_guest_with(
        k,
        &td.cache(),
        &image,
        &["--backend", "namespace"],
        "public",
    );
    jail::assert_jailed(&out);
}

#[test]
fn rootless_a_user_without_a_subordinate_range_is_told_how_to_get_one() {
    if skip(&[Need::Root, Need::Tool("setpriv")]) {
        return;
    }
    let Some(nobody) = user("nobody") else {
        skip_because("no user `nobody`");
        return;
    };
    let listed = ["/etc/subuid", "/etc/subgid"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| t.lines().any(|l| l.starts_with("nobody:")))
    });
    if listed {
        skip_because("`nobody` has a subordinate range here");
        return;
    }
    let td = TestDir::new("rootless-norange");
    let exe = hand_over(&td, &nobody);
    let out = as_user(&td, &nobody, &exe, &[])
        .args(["exec", "--backend", "namespace", "busybox", "--", "true"])
        .run();
    out.failure(1)
        .error_has("/etc/subuid gives nobody no subordinate id range")
        .error_has("usermod --add-subuids");
    assert!(!td.cache().join("runs").exists() || list_names(&td.cache().join("runs")).is_empty());
}

#[test]
fn rootless_run_gives_single_use_runners_and_leaves_no_registration() {
    if skip(ROOTLESS) || skip(run_e2e::NEEDS) {
        return;
    }
    let Some(u) = rootless_user() else { return };
    let f = run_e2e::fixture("rootless-run");
    let exe = hand_over(&f.td, &u);
    let k = as_user(&f.td, &u, &exe, &[]);
    let out = run_e2e::krunner_run_with(&f, k, &["-n", "1", "-r", "2"]).run();
    out.success().never_shows("e2e-token");
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert_eq!(
        run_e2e::names(&f.record),
        ["e2e-0-1", "e2e-0-2"],
        "both runners ran\n{ctx}"
    );
    assert!(f.sim.runners().is_empty(), "registrations left\n{ctx}");
    // The runner (guest uid 1001) wrote its record as one of the user's subordinate ids.
    let m = std::fs::metadata(f.record.join("e2e-0-1")).unwrap();
    let (first, _) = subordinate(USER);
    assert_eq!(m.uid(), first + 1000, "guest uid 1001 on the host\n{ctx}");
    assert!(
        run_e2e::names(&f.td.cache().join("runs")).is_empty(),
        "{ctx}"
    );
}

/// The first id and size of `user`'s range in /etc/subuid.
fn subordinate(user: &str) -> (u32, u32) {
    let text = std::fs::read_to_string("/etc/subuid").unwrap();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == user).then_some(())?;
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .unwrap()
}

#[test]
fn rootless_nothing_is_left_after_krunner_is_killed() {
    if skip(ROOTLESS) {
        return;
    }
    let Some(u) = rootless_user() else { return };
    let td = TestDir::new("rootless-kill");
    let exe = hand_over(&td, &u);
    crate::launcher::nothing_left_after_a_kill(&td, &|| as_user(&td, &u, &exe, &[]));
}

#[test]
fn rootless_a_setuid_file_the_job_writes_is_out_of_other_users_reach() {
    if skip(ROOTLESS) {
        return;
    }
    let Some(u) = rootless_user() else { return };
    let td = TestDir::new("rootless-setuid");
    let exe = hand_over(&td, &u);
    crate::launcher::setuid_file_out_of_reach(&td, &|| as_user(&td, &u, &exe, &[]));
}
