//! The VMM's jail (krun): a user namespace of its own and a minimal mount tree, so that a VMM
//! escape is neither host root nor anywhere near the host's files. Firecracker's `jailer` is
//! the model; here the VM child jails itself, between its mounts and `krun_start_enter`.
//!
//! **Ids.** The VMM runs as root of a user namespace that maps `0..65536` to a host range of
//! its own ([`super::ids`]: one range per run, outside every range a distribution hands out).
//! The image cache stays as it is, owned by the image's ids: every directory the VMM serves
//! is presented to it through an *idmapped mount* (mount_setattr(2) `MOUNT_ATTR_IDMAP`, Linux
//! ≥ 5.12, overlayfs layers ≥ 5.19) that shows a file of uid N as host uid `first + N`, which
//! is N again inside the namespace. So the guest still sees a root-owned image and can
//! `chown` (virtio-fs acts with the namespace's capabilities, valid only on ids it maps),
//! while on the host every file the guest creates in its clone is owned by the range, never
//! by root. The overlay's upper layer is not idmapped (overlayfs writes it with the ids it is
//! given): the few files krunner wrote there before the start are shifted into the range.
//!
//! **Tree.** A small tmpfs becomes the VMM's `/`, holding only what it serves or opens:
//!
//! | path | what |
//! |---|---|
//! | `/root` | the guest's root: the overlay (idmapped layers) or the idmapped copy |
//! | `/shares/N` | share N, idmapped (read-only ones also read-only mounts) |
//! | `/console` | the console log (bound) |
//! | `/dev/kvm` | a node of its own, 0600, owned by the range's root |
//! | `/dev/{null,zero,urandom,random}` | bound from the host |
//! | `/proc` | a procfs with `subset=pid,hidepid=invisible`: virtio-fs reopens files through `/proc/self/fd`; nothing of `/proc/sys` and no other user's processes |
//!
//! libkrunfw is loaded before the pivot (libkrun's later dlopen of the same name finds it),
//! the old root is detached, the tmpfs is remounted read-only, and the VMM enters the
//! namespace: `setgroups([])`, `setns(CLONE_NEWUSER)`, then uid and gid 0 there. From then on
//! it holds no capability in the host's user namespace, and none over its own mount namespace
//! (owned by the host's): it cannot undo the tree.
//!
//! Costs: the guest cannot make device nodes (mknod needs CAP_MKNOD on the host), and a guest
//! port below 1024 needs the jail's network namespace, where krunner opens low ports to
//! unprivileged binds (`ip_unprivileged_port_start=0`, that namespace's own setting).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::spec::{IdMap, LaunchSpec, RootSpec, VmmJail};
use super::sys::{mount_overlay, OverlayLayers, SetupError, Sys};

/// The mount attributes of an idmapped bind besides the idmap (and nodev, always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdmapAttrs {
    /// MOUNT_ATTR_RDONLY.
    pub read_only: bool,
    /// MOUNT_ATTR_NOSUID.
    pub nosuid: bool,
}

impl IdmapAttrs {
    /// What the VMM's views get: nothing in them is ever executed on the host.
    pub fn vmm(read_only: bool) -> IdmapAttrs {
        IdmapAttrs {
            read_only,
            nosuid: true,
        }
    }
}

/// Where things are inside the tree, as the VMM sees them after the pivot.
#[derive(Debug, Clone, PartialEq)]
pub struct JailedPaths {
    /// The guest's root.
    pub root: PathBuf,
    /// Each share's directory, in the spec's order.
    pub shares: Vec<PathBuf>,
    /// The console log, if the spec has one.
    pub console: Option<PathBuf>,
}

/// The VMM's user namespace and its map, through which its views are idmapped; `None`
/// rootless (plain binds).
type View<'a> = Option<(BorrowedFd<'a>, IdMap)>;

/// Maps a failed step of the jail's setup to its error, naming the step and the path.
fn err(step: &'static str, path: &Path) -> impl FnOnce(Errno) -> SetupError {
    let path = path.to_path_buf();
    move |source| SetupError::Jail { step, path, source }
}

/// Host devices bound into the tree's `/dev` (the VMM or its libraries may open them).
const BOUND_DEVICES: &[&str] = &["null", "zero", "urandom", "random"];
/// /dev/kvm: character device 10:232 (Documentation/admin-guide/devices.txt).
const KVM_MAJOR: u64 = 10;
const KVM_MINOR: u64 = 232;

/// Builds the tree in `jail.dir` and mounts the guest's root there; call it in the private
/// mount namespace, as root of the host's user namespace, single-threaded, before
/// [`enter`]. Returns the namespace (to enter later) and the paths libkrun is to be given.
pub fn build(
    sys: &dyn Sys,
    spec: &LaunchSpec,
    jail: &VmmJail,
) -> Result<(Option<OwnedFd>, JailedPaths), SetupError> {
    let userns = match jail.ids {
        Some(ids) => Some((
            sys.new_user_ns(ids)
                .map_err(err("create the VMM's user namespace", &jail.dir))?,
            ids,
        )),
        None => None,
    };
    let view = userns.as_ref().map(|(fd, ids)| (fd.as_fd(), *ids));
    let dir = &jail.dir;
    // Not nodev: /dev/kvm is a node on it. The tree is remounted read-only once complete.
    sys.mount(
        Some(Path::new("tmpfs")),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755,size=1m,nr_inodes=256"),
    )
    .map_err(err("mount the tree's tmpfs", dir))?;

    let root = dir.join("root");
    sys.mkdir_all(&root, 0o755)
        .map_err(err("create the root mount point", &root))?;
    mount_root(sys, &spec.root, &root, &dir.join(".layers"), view, true)?;

    let shares = bind_shares(sys, spec, dir, view)?;
    let console = console_in_tree(sys, spec, dir, view)?;
    make_dev(sys, dir, view)?;
    make_proc(sys, dir, view)?;

    // In the jail's network namespace only (never the host's): TSI binds a guest's listening
    // port in the VMM, which loses CAP_NET_BIND_SERVICE with the host's user namespace.
    if spec.netns.is_some() {
        let knob = Path::new("/proc/sys/net/ipv4/ip_unprivileged_port_start");
        sys.write_file(knob, b"0")
            .map_err(err("open low ports in the jail's network namespace", knob))?;
    }

    Ok((
        userns.map(|(fd, _)| fd),
        JailedPaths {
            root: PathBuf::from("/root"),
            shares,
            console,
        },
    ))
}

/// Binds each share at `shares/N` in the tree (idmapped when the VMM has a range); returns
/// where the VMM finds them.
fn bind_shares(
    sys: &dyn Sys,
    spec: &LaunchSpec,
    dir: &Path,
    view: View<'_>,
) -> Result<Vec<PathBuf>, SetupError> {
    let mut shares = Vec::with_capacity(spec.shares.len());
    for (i, share) in spec.shares.iter().enumerate() {
        let rel = PathBuf::from(format!("shares/{i}"));
        let at = dir.join(&rel);
        sys.mkdir_all(&at, 0o755)
            .map_err(err("create a share mount point", &at))?;
        bind_view(
            sys,
            &share.host,
            &at,
            view,
            IdmapAttrs::vmm(share.read_only),
        )
        .map_err(err("idmap a share", &share.host))?;
        shares.push(Path::new("/").join(rel));
    }
    Ok(shares)
}

/// Makes the console reachable from the tree: a pipe through `/proc`, a log file bound at
/// `/console`; either given to the range when there is one.
fn console_in_tree(
    sys: &dyn Sys,
    spec: &LaunchSpec,
    dir: &Path,
    view: View<'_>,
) -> Result<Option<PathBuf>, SetupError> {
    let console = match &spec.console_log {
        // One of this process's descriptors (the run's output pipe), which libkrun opens
        // anew through /proc: the tree's /proc has it too, and the range's root may reopen
        // it once it owns it (the pipe is the run's own).
        Some(log) if log.starts_with("/proc/self/fd") => {
            if let Some((_, ids)) = view {
                sys.chown(log, ids.host_first, ids.host_first)
                    .map_err(err("give the console pipe to the range", log))?;
            }
            Some(log.clone())
        }
        Some(log) => {
            let at = dir.join("console");
            sys.create_file(&at, 0o600)
                .map_err(err("create the console mount point", &at))?;
            // The VMM opens it for writing as the range's root.
            if let Some((_, ids)) = view {
                sys.lchown(log, ids.host_first, ids.host_first)
                    .map_err(err("give the console log to the range", log))?;
            }
            sys.mount(Some(log), &at, None, MsFlags::MS_BIND, None)
                .map_err(err("bind the console log", log))?;
            Some(PathBuf::from("/console"))
        }
        None => None,
    };
    Ok(console)
}

/// The tree's `/dev`: `kvm` (a node owned by the range, or rootless the host's node bound)
/// and the harmless devices bound from the host.
fn make_dev(sys: &dyn Sys, dir: &Path, view: View<'_>) -> Result<(), SetupError> {
    let dev = dir.join("dev");
    sys.mkdir_all(&dev, 0o755)
        .map_err(err("create the tree's /dev", &dev))?;
    let kvm = dev.join("kvm");
    match view {
        Some((_, ids)) => {
            sys.mknod_char(&kvm, KVM_MAJOR, KVM_MINOR, 0o600)
                .map_err(err("create the tree's /dev/kvm", &kvm))?;
            sys.lchown(&kvm, ids.host_first, ids.host_first)
                .map_err(err("give /dev/kvm to the range", &kvm))?;
        }
        // Rootless: no mknod; the host's node, which the user may open (the kvm group).
        None => bind_device(sys, Path::new("/dev/kvm"), &kvm, "bind /dev/kvm")?,
    }
    for name in BOUND_DEVICES {
        bind_device(
            sys,
            &Path::new("/dev").join(name),
            &dev.join(name),
            "bind a device",
        )?;
    }
    Ok(())
}

/// Binds the host's device node `host` over a new file `at` in the tree.
fn bind_device(
    sys: &dyn Sys,
    host: &Path,
    at: &Path,
    step: &'static str,
) -> Result<(), SetupError> {
    sys.create_file(at, 0o600)
        .map_err(err("create a device mount point", at))?;
    sys.mount(Some(host), at, None, MsFlags::MS_BIND, None)
        .map_err(err(step, host))
}

/// The tree's `/proc`: a procfs of the VMM's pid view with other users' processes hidden, or
/// rootless the host's bound.
fn make_proc(sys: &dyn Sys, dir: &Path, view: View<'_>) -> Result<(), SetupError> {
    let proc = dir.join("proc");
    sys.mkdir_all(&proc, 0o555)
        .map_err(err("create the tree's /proc", &proc))?;
    match view {
        Some(_) => sys
            .mount(
                Some(Path::new("proc")),
                &proc,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("subset=pid,hidepid=invisible"),
            )
            .map_err(err("mount the tree's /proc", &proc))?,
        // Rootless: a procfs needs a pid namespace of our own; the host's is bound instead
        // (the VMM is the user there, as any process of theirs).
        None => {
            let host = Path::new("/proc");
            sys.mount(
                Some(host),
                &proc,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(err("bind the host's /proc", host))?
        }
    }
    Ok(())
}

/// Mounts the guest's root at `target` over idmapped views of the cache: for an overlay,
/// the image (and the runner) layers idmapped under `staging` (removed again once overlayfs
/// holds them), the upper and work directories shifted into the range; for a copy, the copy
/// itself idmapped. `nosuid` for views nothing executes through on the host (the VMM's).
/// Shared with the namespace backend, whose workload runs in the same kind of namespace.
pub fn mount_root(
    sys: &dyn Sys,
    root_spec: &RootSpec,
    target: &Path,
    staging: &Path,
    view: View<'_>,
    nosuid: bool,
) -> Result<(), SetupError> {
    let attrs = |read_only| IdmapAttrs { read_only, nosuid };
    let root = target.to_path_buf();
    let layers = staging.to_path_buf();
    match root_spec {
        RootSpec::Overlay {
            lower,
            runner,
            upper,
            work,
            ..
        } => {
            let Some((userns, ids)) = view else {
                // Rootless: the layers as they are (their owners are already the
                // namespace's), in overlayfs's user xattr mode.
                let layers_given = OverlayLayers {
                    image: lower,
                    runner: runner.as_deref(),
                    upper,
                    work,
                };
                return mount_overlay(sys, &layers_given, lower, &root);
            };
            let image = layers.join("image");
            sys.mkdir_all(&image, 0o700)
                .map_err(err("create a layer mount point", &image))?;
            sys.idmap_bind(lower, &image, userns, attrs(true))
                .map_err(err("idmap the image layer", lower))?;
            let runner_layer = match runner {
                Some(r) => {
                    let at = layers.join("runner");
                    sys.mkdir_all(&at, 0o700)
                        .map_err(err("create a layer mount point", &at))?;
                    sys.idmap_bind(r, &at, userns, attrs(true))
                        .map_err(err("idmap the runner layer", r))?;
                    Some(at)
                }
                None => None,
            };
            sys.shift_owners(upper, ids)
                .map_err(err("shift the upper layer's owners into the range", upper))?;
            sys.shift_owners(work, ids)
                .map_err(err("shift the work directory's owner into the range", work))?;
            let layers_given = OverlayLayers {
                image: &image,
                runner: runner_layer.as_deref(),
                upper,
                work,
            };
            mount_overlay(sys, &layers_given, lower, &root)?;
            // overlayfs holds private clones of its layers: the staging mounts can go.
            for at in std::iter::once(&image).chain(runner_layer.as_ref()) {
                sys.umount2(at, MntFlags::MNT_DETACH)
                    .map_err(err("detach a staged layer", at))?;
                sys.rmdir(at)
                    .map_err(err("remove a staged layer's mount point", at))?;
            }
            sys.rmdir(&layers)
                .map_err(err("remove the staged layers' directory", &layers))?;
        }
        RootSpec::Dir(d) => {
            bind_view(sys, d, &root, view, attrs(false)).map_err(err("idmap the root copy", d))?;
        }
    }

    Ok(())
}

/// Binds `src` at `dst` as the VMM is to see it: idmapped into its namespace, or (rootless,
/// `view` none) as it is, with the same read-only and nosuid attributes.
fn bind_view(
    sys: &dyn Sys,
    src: &Path,
    dst: &Path,
    view: View<'_>,
    attrs: IdmapAttrs,
) -> nix::Result<()> {
    if let Some((userns, _)) = view {
        return sys.idmap_bind(src, dst, userns, attrs);
    }
    sys.mount(
        Some(src),
        dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV;
    flags.set(MsFlags::MS_RDONLY, attrs.read_only);
    flags.set(MsFlags::MS_NOSUID, attrs.nosuid);
    // The source's locked flags (noexec, say) must be repeated: a remount may not clear them.
    let keep = sys.mount_flags(src)?;
    sys.mount(None, dst, None, flags | keep, None)
}

/// Makes the tree `/`, detaches the host's root, seals the tree read-only, and enters the
/// user namespace as its root. After this the process has no capability on the host.
pub fn enter(
    sys: &dyn Sys,
    jail: &VmmJail,
    userns: Option<BorrowedFd<'_>>,
) -> Result<(), SetupError> {
    let dir = &jail.dir;
    let old = dir.join(".old");
    sys.mkdir_all(&old, 0o700)
        .map_err(err("create the old root's mount point", &old))?;
    sys.pivot_root(dir, &old)
        .map_err(|source| SetupError::PivotRoot {
            root: dir.clone(),
            source,
        })?;
    let slash = Path::new("/");
    sys.chdir(slash)
        .map_err(err("chdir into the tree", slash))?;
    let old = Path::new("/.old");
    sys.umount2(old, MntFlags::MNT_DETACH)
        .map_err(err("detach the host's root", old))?;
    sys.rmdir(old)
        .map_err(err("remove the old root's mount point", old))?;
    // Read-only from here: the VMM has nothing to create in its own tree.
    sys.mount(
        None,
        slash,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
        None,
    )
    .map_err(err("seal the tree read-only", slash))?;
    // Rootless, the VMM stays root of krunner's namespace (capabilities go later).
    if let Some(userns) = userns {
        sys.enter_user_ns(userns)
            .map_err(err("enter the VMM's user namespace", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::spec::Share;
    use crate::launcher::sys::tests::overlay_spec;
    use crate::launcher::sys::FakeSys;

    fn jail() -> VmmJail {
        VmmJail {
            dir: "/r/jail".into(),
            ids: Some(IdMap {
                host_first: 0x7000_0000,
                count: 65536,
            }),
        }
    }

    /// Each of `wants` begins a call of `calls`, in this order (others may come between).
    fn assert_in_order(calls: &[String], wants: &[&str]) {
        let mut at = 0;
        for want in wants {
            let found = calls[at..].iter().position(|c| c.starts_with(want));
            let Some(i) = found else {
                panic!("{want:?} missing (or out of order) in {calls:#?}");
            };
            at += i + 1;
        }
    }

    fn jailed_spec() -> LaunchSpec {
        let mut spec = overlay_spec();
        spec.shares = vec![Share {
            tag: "cache".into(),
            host: "/srv/cache".into(),
            guest: "/cache".into(),
            read_only: true,
        }];
        spec.console_log = Some("/r/console.log".into());
        spec.netns = Some("/r/netns".into());
        spec
    }

    #[test]
    fn the_tree_holds_the_idmapped_root_shares_devices_and_proc_only() {
        let sys = FakeSys::new();
        let (_fd, paths) = build(&sys, &jailed_spec(), &jail()).expect("build");
        assert_eq!(
            paths,
            JailedPaths {
                root: "/root".into(),
                shares: vec!["/shares/0".into()],
                console: Some("/console".into()),
            }
        );
        let calls = sys.calls();
        let want_in_order = [
            "new_user_ns 0:1879048192:65536",
            "mount tmpfs /r/jail tmpfs MS_NOSUID",
            "idmap_bind /c/rootfs /r/jail/.layers/image ro,nosuid",
            "shift_owners /r/upper",
            "shift_owners /r/work",
            "mount overlay /r/jail/root overlay - lowerdir=/r/jail/.layers/image,upperdir=/r/upper,workdir=/r/work",
            "umount2 /r/jail/.layers/image MNT_DETACH",
            "rmdir /r/jail/.layers/image",
            "rmdir /r/jail/.layers",
            "idmap_bind /srv/cache /r/jail/shares/0 ro,nosuid",
            "lchown /r/console.log 1879048192 1879048192",
            "mount /r/console.log /r/jail/console - MS_BIND -",
            "mknod_char /r/jail/dev/kvm 10:232 600",
            "lchown /r/jail/dev/kvm 1879048192 1879048192",
            "mount /dev/urandom /r/jail/dev/urandom - MS_BIND -",
            "mount proc /r/jail/proc proc MS_NOSUID|MS_NODEV|MS_NOEXEC subset=pid,hidepid=invisible",
            "write_file /proc/sys/net/ipv4/ip_unprivileged_port_start 0",
        ];
        assert_in_order(&calls, &want_in_order);
        // Nothing of the host is bound but the shares, the console and the four devices.
        let binds: Vec<&String> = calls
            .iter()
            .filter(|c| c.contains(" MS_BIND") || c.starts_with("idmap_bind"))
            .collect();
        assert_eq!(binds.len(), 1 + 1 + 1 + BOUND_DEVICES.len(), "{binds:#?}");
    }

    #[test]
    fn rootless_the_tree_binds_what_it_cannot_idmap_or_make_and_stays_in_krunners_namespace() {
        let sys = FakeSys::new().with_mount_flags(MsFlags::MS_NOEXEC);
        let rootless = VmmJail {
            dir: "/r/jail".into(),
            ids: None,
        };
        let (fd, paths) = build(&sys, &jailed_spec(), &rootless).expect("build");
        assert!(fd.is_none());
        assert_eq!(paths.shares, vec![PathBuf::from("/shares/0")]);
        let calls = sys.calls();
        let want_in_order = [
            "mount tmpfs /r/jail tmpfs MS_NOSUID",
            "mount overlay /r/jail/root overlay - lowerdir=/c/rootfs,upperdir=/r/upper,workdir=/r/work",
            "mount /srv/cache /r/jail/shares/0 - MS_BIND|MS_REC -",
            // Read-only, nosuid, and the source's locked noexec repeated.
            "mount - /r/jail/shares/0 - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            "mount /r/console.log /r/jail/console - MS_BIND -",
            "mount /dev/kvm /r/jail/dev/kvm - MS_BIND -",
            "mount /proc /r/jail/proc - MS_BIND|MS_REC -",
        ];
        assert_in_order(&calls, &want_in_order);
        for never in [
            "new_user_ns",
            "idmap_bind",
            "shift_owners",
            "mknod",
            "chown",
        ] {
            assert!(
                !calls.iter().any(|c| c.contains(never)),
                "{never}: {calls:#?}"
            );
        }
        // And entering it pivots without any setns.
        let sys = FakeSys::new();
        enter(&sys, &rootless, None).expect("enter");
        let calls = sys.calls();
        assert!(
            calls.iter().any(|c| c.starts_with("pivot_root")),
            "{calls:#?}"
        );
        assert!(
            !calls.iter().any(|c| c.starts_with("enter_user_ns")),
            "{calls:#?}"
        );
    }

    #[test]
    fn a_console_on_an_inherited_descriptor_is_given_to_the_range_not_bound() {
        let sys = FakeSys::new();
        let mut spec = jailed_spec();
        spec.console_log = Some("/proc/self/fd/2".into());
        let (_fd, paths) = build(&sys, &spec, &jail()).expect("build");
        assert_eq!(paths.console, Some("/proc/self/fd/2".into()));
        let calls = sys.calls();
        assert!(
            calls.contains(&"chown /proc/self/fd/2 1879048192 1879048192".to_string()),
            "{calls:#?}"
        );
        assert!(
            !calls.iter().any(|c| c.contains("/r/jail/console")),
            "{calls:#?}"
        );
    }

    #[test]
    fn a_runner_layer_is_idmapped_above_the_image() {
        let sys = FakeSys::new();
        let mut spec = jailed_spec();
        if let RootSpec::Overlay { runner, .. } = &mut spec.root {
            *runner = Some("/c/runners/x/tree".into());
        }
        build(&sys, &spec, &jail()).expect("build");
        let calls = sys.calls();
        assert!(
            calls
                .iter()
                .any(|c| c == "idmap_bind /c/runners/x/tree /r/jail/.layers/runner ro,nosuid"),
            "{calls:#?}"
        );
        assert!(
            calls.iter().any(|c| c.contains(
                "lowerdir=/r/jail/.layers/runner:/r/jail/.layers/image,upperdir=/r/upper"
            )),
            "{calls:#?}"
        );
    }

    #[test]
    fn a_share_that_cannot_be_idmapped_is_named_in_the_error() {
        let sys = FakeSys::new().fail("idmap_bind /srv/cache", Errno::EINVAL);
        let e = build(&sys, &jailed_spec(), &jail()).expect_err("must fail");
        let text = crate::error_chain(&e);
        assert!(text.contains("/srv/cache"), "{text}");
        assert!(text.contains("idmapped mounts"), "{text}");
    }

    #[test]
    fn without_a_network_jail_the_host_port_setting_is_left_alone() {
        let sys = FakeSys::new();
        let mut spec = jailed_spec();
        spec.netns = None;
        build(&sys, &spec, &jail()).expect("build");
        assert!(!sys.calls().iter().any(|c| c.starts_with("write_file")));
    }

    #[test]
    fn entering_pivots_detaches_seals_and_then_changes_namespace() {
        let sys = FakeSys::new();
        let devnull = std::fs::File::open("/dev/null").expect("/dev/null");
        enter(&sys, &jail(), Some(devnull.as_fd())).expect("enter");
        assert_eq!(
            sys.calls(),
            vec![
                "mkdir_all /r/jail/.old 700",
                "pivot_root /r/jail /r/jail/.old",
                "chdir /",
                "umount2 /.old MNT_DETACH",
                "rmdir /.old",
                "mount - / - MS_RDONLY|MS_NOSUID|MS_REMOUNT|MS_BIND -",
                "enter_user_ns",
            ]
        );
    }

    #[test]
    fn a_refused_user_namespace_stops_before_any_mount() {
        let sys = FakeSys::new().fail("new_user_ns", Errno::EPERM);
        assert!(build(&sys, &jailed_spec(), &jail()).is_err());
        assert_eq!(sys.calls().len(), 1);
    }
}
