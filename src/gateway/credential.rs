//! Who a request is: the credential it presented (a token by its index, a client certificate by
//! its hash, an OAuth access token by the hash of who it speaks for, or nothing on a gateway that
//! asks for none), and the `Holder` a session or a parked
//! call is counted against and bound to: the credential, or, without one, the client's address
//! (an IPv6 address by its /64, the usual allocation of one subscriber, so that one network cannot
//! walk around a per-address cap by changing its low bits). Tokens themselves are never kept.

use std::net::{IpAddr, Ipv6Addr};

/// The credential a request presented: none needed, the token at this index of its list, or,
/// on a gateway without tokens for that role, the client certificate (mTLS) by its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Credential {
    Open,
    Token(usize),
    Certificate([u8; 32]),
    /// An OAuth access token, by the SHA-256 of its issuer, subject and client: a refreshed
    /// token of the same client and user finds its sessions; another client's does not.
    Subject([u8; 32]),
}

impl Credential {
    /// An open credential becomes the peer's certificate, when it presented one: then names and
    /// sessions belong to that certificate.
    pub(crate) fn with_identity(self, identity: Option<[u8; 32]>) -> Credential {
        match (self, identity) {
            (Credential::Open, Some(id)) => Credential::Certificate(id),
            (c, _) => c,
        }
    }
}

/// Who a session counts against for `--max-sessions-per-client`: its token, or, on a gateway
/// without tokens, the address it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    Token(usize),
    Certificate([u8; 32]),
    Subject([u8; 32]),
    Address(IpAddr),
}

impl Holder {
    /// Who holds what `credential` opens from `peer`.
    pub(crate) fn of(credential: Credential, peer: IpAddr) -> Holder {
        match credential {
            Credential::Token(i) => Holder::Token(i),
            Credential::Certificate(id) => Holder::Certificate(id),
            Credential::Subject(id) => Holder::Subject(id),
            Credential::Open => Holder::Address(client_address(peer)),
        }
    }

    /// A short text naming the holder, for a sealed `requestState` (never a token: its index).
    pub(crate) fn tag(&self) -> String {
        match self {
            Holder::Token(i) => format!("t{i}"),
            Holder::Certificate(hash) => format!("c{}", hex(hash)),
            Holder::Subject(hash) => format!("s{}", hex(hash)),
            Holder::Address(ip) => format!("a{ip}"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The address a client counts under: an IPv4 address as it is (an IPv4-mapped IPv6 address as
/// the IPv4 one), an IPv6 address by its /64.
pub(crate) fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) if v6.is_loopback() => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_address(a), client_address(b));
        assert_ne!(client_address(a), client_address(c));
        assert_eq!(client_address("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_address("10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(Holder::of(Credential::Open, a), Holder::of(Credential::Open, b));
        assert_ne!(Holder::of(Credential::Token(0), a).tag(), Holder::of(Credential::Token(1), a).tag());
    }
}
