//! The egress policy of a jailed guest: what its network namespace lets out, as an nftables
//! rule set, and which of the host's loopback ports pasta forwards into it.
//!
//! By default a guest reaches public addresses only. Blocked: the host's own addresses,
//! loopback (the namespace's loopback is the guest's own and stays open), RFC 1918, CGNAT,
//! link-local (with the cloud metadata address), multicast, reserved ranges, and the IPv6
//! equivalents. `--egress-allow CIDR[:PORT]` opens exceptions; an allowed port on the host's
//! own loopback (`127.0.0.1:PORT`, `[::1]:PORT`) is forwarded by pasta, so the guest reaches
//! it at that same address.
//!
//! Everything here is pure text and parsing, tested without a namespace; [`super::netns`]
//! loads the rules and starts pasta.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// What a jailed guest may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressPolicy {
    /// A network namespace of its own: public addresses and the `allow` exceptions only.
    Public {
        /// Exceptions to the blocked ranges.
        allow: Vec<Allow>,
    },
    /// No jail: the guest shares the host's network, loopback included (the behaviour before
    /// the jail; `--egress-policy open`).
    Open,
}

impl EgressPolicy {
    /// Whether the guest gets a network namespace of its own.
    pub fn is_jailed(&self) -> bool {
        matches!(self, EgressPolicy::Public { .. })
    }

    /// Adds an exception (no-op under [`EgressPolicy::Open`], which allows everything).
    pub fn allow(&mut self, a: Allow) {
        if let EgressPolicy::Public { allow } = self {
            if !allow.contains(&a) {
                allow.push(a);
            }
        }
    }
}

/// One `--egress-allow` exception: a network, and optionally one TCP/UDP port on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allow {
    /// The addresses.
    pub net: IpNet,
    /// The one port allowed, or every port.
    pub port: Option<u16>,
}

/// Why an `--egress-allow` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowError {
    /// Not `CIDR[:PORT]`.
    #[error("--egress-allow {0:?}: expected ADDRESS[/PREFIX][:PORT], e.g. 10.1.2.3:5000, 10.0.0.0/8, [fd00::1]:443")]
    Syntax(String),
    /// The port is not a number in 1–65535.
    #[error("--egress-allow {value:?}: {port:?} is not a port (1-65535)")]
    Port {
        /// The whole value.
        value: String,
        /// The port part.
        port: String,
    },
    /// A loopback exception without a port: the whole host loopback cannot be opened (pasta
    /// forwards single ports), and opening it all would defeat the jail.
    #[error("--egress-allow {0:?}: the host's loopback can only be opened one port at a time (127.0.0.1:PORT)")]
    LoopbackNeedsPort(String),
    /// A loopback address other than 127.0.0.1 and ::1, which pasta cannot forward.
    #[error("--egress-allow {0:?}: of the host's loopback only 127.0.0.1:PORT and [::1]:PORT can be opened")]
    LoopbackAddress(String),
}

impl FromStr for Allow {
    type Err = AllowError;

    fn from_str(value: &str) -> Result<Allow, AllowError> {
        let syntax = || AllowError::Syntax(value.to_string());
        let (addr, port) = split_port(value).ok_or_else(syntax)?;
        let net = match addr.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => IpNet::from(addr.parse::<IpAddr>().map_err(|_| syntax())?),
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(AllowError::Port {
                        value: value.to_string(),
                        port: p.to_string(),
                    })
                }
            },
        };
        let a = Allow { net, port };
        if net.addr().is_loopback() {
            if port.is_none() {
                return Err(AllowError::LoopbackNeedsPort(value.to_string()));
            }
            if a.loopback_port().is_none() {
                return Err(AllowError::LoopbackAddress(value.to_string()));
            }
        }
        Ok(a)
    }
}

/// Splits `ADDR[:PORT]`, with IPv6 in brackets when a port follows: `[fd00::/8]:443`.
fn split_port(value: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = value.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        return match after {
            "" => Some((addr, None)),
            _ => Some((addr, Some(after.strip_prefix(':')?))),
        };
    }
    match value.matches(':').count() {
        0 => Some((value, None)),
        1 => value.split_once(':').map(|(a, p)| (a, Some(p))),
        // More than one colon and no brackets: a bare IPv6 address or network.
        _ => Some((value, None)),
    }
}

impl Allow {
    /// The host loopback port this exception forwards into the namespace, if it is one
    /// (exactly 127.0.0.1 or ::1, with a port).
    pub fn loopback_port(&self) -> Option<u16> {
        let single = self.net.prefix_len() == self.net.max_prefix_len();
        let addr = self.net.addr();
        let is_host_lo = addr == IpAddr::from([127, 0, 0, 1])
            || addr == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]);
        (single && is_host_lo).then_some(self.port).flatten()
    }
}

impl std::fmt::Display for Allow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let single = self.net.prefix_len() == self.net.max_prefix_len();
        let net = if single {
            self.net.addr().to_string()
        } else {
            self.net.to_string()
        };
        match (self.port, self.net) {
            (None, _) => f.write_str(&net),
            (Some(p), IpNet::V4(_)) => write!(f, "{net}:{p}"),
            (Some(p), IpNet::V6(_)) => write!(f, "[{net}]:{p}"),
        }
    }
}

/// IPv4 ranges a guest never reaches unless allowed: "this network", RFC 1918, CGNAT,
/// loopback, link-local (169.254.169.254, the cloud metadata service, among it), the IETF
/// protocol block, multicast, reserved and broadcast.
pub const BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// The IPv6 equivalents: unspecified and loopback, IPv4-mapped and NAT64 (which would reach
/// blocked IPv4 addresses another way), unique-local, link-local, site-local and multicast.
pub const BLOCKED_V6: &[&str] = &[
    "::/127",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// The nftables rule set loaded in a guest's namespace (`nft -f -`).
///
/// Only the `output` hook is needed: every packet the guest's traffic becomes leaves the
/// namespace through pasta's tap device, and the namespace receives nothing it did not ask
/// for (pasta forwards no inbound port). Traffic on the namespace's own loopback stays open:
/// it is the guest's own, plus the loopback ports pasta forwards. `dns` is allowed on port 53
/// so that resolution keeps working when the resolver sits in a blocked range. The host's own
/// addresses are blocked too: pasta would otherwise connect to them from the host, where
/// services bound to 0.0.0.0 answer.
pub fn ruleset(allow: &[Allow], dns: Option<IpAddr>, host_addrs: &[IpAddr]) -> String {
    let mut r = String::new();
    r.push_str("table inet krunner_egress {\n");
    r.push_str("\tchain output {\n");
    r.push_str("\t\ttype filter hook output priority 0; policy accept;\n");
    r.push_str("\t\toif \"lo\" accept\n");
    for a in allow.iter().filter(|a| a.loopback_port().is_none()) {
        let family = family(&a.net.addr());
        match a.port {
            None => {
                let _ = writeln!(r, "\t\t{family} daddr {} accept", a.net);
            }
            Some(p) => {
                let _ = writeln!(r, "\t\t{family} daddr {} tcp dport {p} accept", a.net);
                let _ = writeln!(r, "\t\t{family} daddr {} udp dport {p} accept", a.net);
            }
        }
    }
    if let Some(d) = dns {
        let family = family(&d);
        let _ = writeln!(r, "\t\t{family} daddr {d} tcp dport 53 accept");
        let _ = writeln!(r, "\t\t{family} daddr {d} udp dport 53 accept");
    }
    let (v4, v6): (Vec<String>, Vec<String>) = {
        let mut v4: Vec<String> = BLOCKED_V4.iter().map(|s| s.to_string()).collect();
        let mut v6: Vec<String> = BLOCKED_V6.iter().map(|s| s.to_string()).collect();
        for a in host_addrs {
            match a {
                IpAddr::V4(x) => v4.push(x.to_string()),
                IpAddr::V6(x) => v6.push(x.to_string()),
            }
        }
        (v4, v6)
    };
    // `interval` sets accept overlapping members (a host address inside 10.0.0.0/8) only with
    // auto-merge.
    let _ = writeln!(
        r,
        "\t\tip daddr {{ {} }} reject with icmp type admin-prohibited",
        v4.join(", ")
    );
    let _ = writeln!(
        r,
        "\t\tip6 daddr {{ {} }} reject with icmpv6 type admin-prohibited",
        v6.join(", ")
    );
    r.push_str("\t}\n}\n");
    r
}

fn family(a: &IpAddr) -> &'static str {
    match a {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    }
}

/// Whether `addr` is in a range the policy blocks (before exceptions), the host's own
/// addresses aside.
pub fn is_blocked_range(addr: IpAddr) -> bool {
    let list = match addr {
        IpAddr::V4(_) => BLOCKED_V4,
        IpAddr::V6(_) => BLOCKED_V6,
    };
    list.iter()
        .filter_map(|s| s.parse::<IpNet>().ok())
        .any(|n| n.contains(&addr))
}

/// The host's loopback ports pasta forwards into the namespace (`-T`), sorted, no repeats.
pub fn loopback_ports(allow: &[Allow]) -> Vec<u16> {
    let mut ports: Vec<u16> = allow.iter().filter_map(Allow::loopback_port).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The addresses of the host's interfaces (those nftables must block: pasta reaches them from
/// the host side). Interfaces that cannot be read are skipped.
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|i| i.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        // Loopback and link-local are blocked as whole ranges already.
        .filter(|a| !is_blocked_range(*a))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(s: &str) -> Allow {
        s.parse().unwrap()
    }

    #[test]
    fn allow_values_parse_with_and_without_ports() {
        assert_eq!(allow("10.1.2.3:5000").to_string(), "10.1.2.3:5000");
        assert_eq!(allow("10.1.2.3").to_string(), "10.1.2.3");
        assert_eq!(allow("10.0.0.0/8:443").to_string(), "10.0.0.0/8:443");
        // Host bits are dropped: 10.1.2.3/8 means the network.
        assert_eq!(allow("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(allow("fd00::1").to_string(), "fd00::1");
        assert_eq!(allow("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(allow("[fd00::/8]:443").to_string(), "[fd00::/8]:443");
        assert_eq!(allow("[::1]:8080").loopback_port(), Some(8080));
        assert_eq!(allow("127.0.0.1:8080").loopback_port(), Some(8080));
        assert_eq!(allow("10.1.2.3:8080").loopback_port(), None);
    }

    #[test]
    fn bad_allow_values_name_the_value_and_the_problem() {
        let err = |s: &str| s.parse::<Allow>().unwrap_err();
        assert!(matches!(err("example.com"), AllowError::Syntax(_)));
        assert!(matches!(err("10.1.2.3:0"), AllowError::Port { .. }));
        assert!(matches!(err("10.1.2.3:http"), AllowError::Port { .. }));
        assert!(matches!(err("10.1.2.3/33"), AllowError::Syntax(_)));
        assert!(matches!(err("[fd00::1"), AllowError::Syntax(_)));
        assert!(matches!(err("127.0.0.1"), AllowError::LoopbackNeedsPort(_)));
        assert!(matches!(
            err("127.0.0.0/8:80"),
            AllowError::LoopbackAddress(_)
        ));
        assert!(matches!(
            err("127.0.0.2:80"),
            AllowError::LoopbackAddress(_)
        ));
        assert!(err("10.1.2.3:99999").to_string().contains("10.1.2.3:99999"));
    }

    #[test]
    fn blocked_ranges_cover_the_issue_list_and_spare_public_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_blocked_range(a.parse().unwrap()), "{a} must be blocked");
        }
        for a in ["1.1.1.1", "203.0.113.10", "140.82.112.3", "2606:4700::1111"] {
            assert!(!is_blocked_range(a.parse().unwrap()), "{a} must be open");
        }
    }

    #[test]
    fn the_ruleset_accepts_exceptions_and_dns_before_it_rejects() {
        let rules = ruleset(
            &[
                allow("10.9.8.7:5000"),
                allow("192.168.0.0/16"),
                allow("127.0.0.1:8080"),
            ],
            Some("10.0.0.53".parse().unwrap()),
            &[
                "198.51.100.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
        );
        let pos = |needle: &str| {
            rules
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from\n{rules}"))
        };
        let reject = pos("ip daddr { 0.0.0.0/8");
        assert!(pos("oif \"lo\" accept") < reject);
        assert!(pos("ip daddr 10.9.8.7/32 tcp dport 5000 accept") < reject);
        assert!(pos("ip daddr 192.168.0.0/16 accept") < reject);
        assert!(pos("ip daddr 10.0.0.53 udp dport 53 accept") < reject);
        assert!(pos("169.254.0.0/16") > reject);
        assert!(pos("198.51.100.7 }") > reject);
        assert!(pos("2001:db8::7 }") > pos("ip6 daddr { ::/127"));
        // A loopback exception is pasta's business: the namespace's loopback is open anyway.
        assert!(!rules.contains("127.0.0.1/32"));
        assert_eq!(
            loopback_ports(&[
                allow("127.0.0.1:8080"),
                allow("[::1]:8080"),
                allow("127.0.0.1:53")
            ]),
            vec![53, 8080]
        );
    }

    #[test]
    fn exceptions_are_not_repeated_and_open_ignores_them() {
        let mut p = EgressPolicy::Public { allow: Vec::new() };
        p.allow(allow("10.1.2.3:80"));
        p.allow(allow("10.1.2.3:80"));
        assert_eq!(
            p,
            EgressPolicy::Public {
                allow: vec![allow("10.1.2.3:80")]
            }
        );
        let mut o = EgressPolicy::Open;
        o.allow(allow("10.1.2.3:80"));
        assert_eq!(o, EgressPolicy::Open);
        assert!(!o.is_jailed());
    }
}
