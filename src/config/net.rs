//! What the configuration means on the network: the host-candidate
//! addresses to advertise (from `WISP_PUBLIC_IPS`, `WISP_UDP_ADDR` or the
//! interfaces found in `/proc`), and the ICE servers as `Link` header values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Config;

impl Config {
    /// The host-candidate addresses to advertise, all with the UDP port.
    ///
    /// `public_ips` if set; else `udp_addr`'s IP if it is not unspecified;
    /// else the machine's interface addresses of the same family as
    /// `udp_addr` (IPv4 from `/proc/net/fib_trie`, IPv6 from
    /// `/proc/net/if_inet6` without link-local), non-loopback first, loopback
    /// last, without duplicates; `127.0.0.1` if nothing is found.
    pub fn advertised_addrs(&self) -> Vec<SocketAddr> {
        let fib = std::fs::read_to_string("/proc/net/fib_trie").ok();
        let inet6 = std::fs::read_to_string("/proc/net/if_inet6").ok();
        advertised_from(
            &self.public_ips,
            self.udp_addr,
            fib.as_deref(),
            inet6.as_deref(),
        )
    }

    /// One `Link` header value per ICE server, STUN first, then TURN with
    /// quoted, escaped credentials (`credential-type="password"`).
    pub fn ice_server_links(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .stun_urls
            .iter()
            .map(|u| format!("<{u}>; rel=\"ice-server\""))
            .collect();
        if let (Some(user), Some(cred)) = (&self.turn_username, &self.turn_credential) {
            for u in &self.turn_urls {
                out.push(format!(
                    "<{u}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; \
                     credential-type=\"password\"",
                    quote_escape(user),
                    quote_escape(cred)
                ));
            }
        }
        out
    }
}

/// Escape `\` and `"` for a quoted-string header parameter.
fn quote_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// [`Config::advertised_addrs`] with the `/proc` files passed in (for tests).
fn advertised_from(
    public_ips: &[IpAddr],
    udp_addr: SocketAddr,
    fib_trie: Option<&str>,
    if_inet6: Option<&str>,
) -> Vec<SocketAddr> {
    let port = udp_addr.port();
    let ips: Vec<IpAddr> = if !public_ips.is_empty() {
        dedup(public_ips.iter().copied())
    } else if !udp_addr.ip().is_unspecified() {
        vec![udp_addr.ip()]
    } else {
        let found: Vec<IpAddr> = match udp_addr.ip() {
            IpAddr::V4(_) => fib_trie
                .map(parse_fib_trie)
                .unwrap_or_default()
                .into_iter()
                .map(IpAddr::V4)
                .collect(),
            IpAddr::V6(_) => if_inet6
                .map(parse_if_inet6)
                .unwrap_or_default()
                .into_iter()
                .map(IpAddr::V6)
                .collect(),
        };
        let (lo, mut rest): (Vec<IpAddr>, Vec<IpAddr>) =
            found.into_iter().partition(|ip| ip.is_loopback());
        rest.extend(lo);
        let all = dedup(rest.into_iter());
        if all.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        } else {
            all
        }
    };
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

fn dedup(ips: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Local IPv4 addresses: the `|-- a.b.c.d` entries followed by `/32 host LOCAL`.
fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("|--") {
            last = rest.trim().parse().ok();
        } else if t == "/32 host LOCAL" {
            if let Some(ip) = last {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// IPv6 addresses from `/proc/net/if_inet6`, without link-local (`fe80::/10`).
fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(hex) = line.split_whitespace().next() else {
            continue;
        };
        if hex.len() != 32 || !hex.is_ascii() {
            continue;
        }
        let Ok(n) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        let ip = Ipv6Addr::from(n);
        let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
        if !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 172.17.0.0/16 2 0 2
        |-- 172.17.0.2
           /32 host LOCAL
        |-- 172.17.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 127.0.0.1
        /32 host LOCAL
     |-- 172.17.0.2
        /32 host LOCAL
     |-- 10.0.0.5
        /32 host LOCAL
";

    const INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000242acfffe110002 02 40 20 80     eth0
20010db8000000000000000000000001 02 40 00 00     eth0
garbage
";

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn advertised_v4_discovery() {
        let udp: SocketAddr = "0.0.0.0:8189".parse().unwrap();
        assert_eq!(
            advertised_from(&[], udp, Some(FIB), Some(INET6)),
            addrs(&["172.17.0.2:8189", "10.0.0.5:8189", "127.0.0.1:8189"])
        );
        assert_eq!(
            advertised_from(&[], udp, None, None),
            addrs(&["127.0.0.1:8189"])
        );
    }

    #[test]
    fn advertised_v6_discovery() {
        let udp: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(
            advertised_from(&[], udp, Some(FIB), Some(INET6)),
            addrs(&["[2001:db8::1]:9", "[::1]:9"])
        );
    }

    #[test]
    fn advertised_explicit() {
        let udp: SocketAddr = "192.168.1.2:7000".parse().unwrap();
        assert_eq!(
            advertised_from(&[], udp, Some(FIB), None),
            addrs(&["192.168.1.2:7000"])
        );
        let public: Vec<IpAddr> = vec![
            "203.0.113.9".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        ];
        assert_eq!(
            advertised_from(&public, udp, Some(FIB), None),
            addrs(&["203.0.113.9:7000", "[2001:db8::2]:7000"])
        );
    }

    #[test]
    fn advertised_real_machine_is_not_empty() {
        let c = Config::default();
        let a = c.advertised_addrs();
        assert!(!a.is_empty());
        assert!(a.iter().all(|s| s.port() == 8189 && s.is_ipv4()));
    }
}
