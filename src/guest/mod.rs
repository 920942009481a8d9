//! What the host puts into each run's clone before boot: the guest agent, its configuration,
//! and the network files. None of it is secret (secrets travel in the per-run secrets share).

use crate::launcher::spec::Share;

/// Where the agent lives in the guest.
pub const AGENT_PATH: &str = "/.krunner/agent";
/// Its configuration.
pub const AGENT_CONF: &str = "/.krunner/agent.conf";
/// The agent itself: POSIX sh, so any image with `/bin/sh` and `mount` can run it.
pub const AGENT_SCRIPT: &str = include_str!("agent.sh");

/// The PATH every guest workload gets (libkrun's init sets none).
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The agent configuration: one `mount TAG PATH rw|ro` line per share the guest must mount
/// itself (krun); empty when the host mounted them (namespace backend).
pub fn agent_conf(shares_to_mount: &[Share]) -> String {
    let mut s =
        String::from("# written by krunner: shares to mount (virtio-fs tag, guest path, mode)\n");
    for sh in shares_to_mount {
        s.push_str(&format!(
            "mount {} {} {}\n",
            sh.tag,
            sh.guest.display(),
            if sh.read_only { "ro" } else { "rw" }
        ));
    }
    s
}

/// `/etc/resolv.conf`: libkrun's TSI carries DNS over TCP only, hence `use-vc`.
pub fn resolv_conf(dns: &str) -> String {
    format!("# written by krunner\noptions use-vc\nnameserver {dns}\n")
}

/// `/etc/hosts` with the guest's own name.
pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_conf_lists_mounts() {
        let s = agent_conf(&[Share {
            tag: "krunner-cache".into(),
            host: "/h".into(),
            guest: "/cache".into(),
            read_only: true,
        }]);
        assert!(s.contains("mount krunner-cache /cache ro\n"), "{s}");
        assert!(resolv_conf("1.1.1.1").contains("options use-vc\nnameserver 1.1.1.1\n"));
    }

    #[test]
    fn agent_script_is_posix_sh() {
        assert!(AGENT_SCRIPT.starts_with("#!/bin/sh\n"));
    }
}
