//! `CidrV4`: a loopback IPv4 network in CIDR notation, the type of `[local] address_pool`
//! (an option kind of its own, `OptKind::LoopbackNetwork`).

use std::{fmt, net::Ipv4Addr, str::FromStr};

/// An IPv4 network inside 127.0.0.0/8 with room for at least one VM: prefix /8 to /30,
/// host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidrV4 {
    network: Ipv4Addr,
    prefix: u8,
}

impl CidrV4 {
    /// What a valid value looks like, for error messages.
    pub const EXPECTED: &'static str =
        "expected an IPv4 network inside 127.0.0.0/8 in CIDR notation, from /8 to /30, \
         such as 127.0.1.0/24";

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network's last address (its broadcast address).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    /// Every address of the network, first to last.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.network)..=u32::from(self.last())).map(Ipv4Addr::from)
    }

    fn mask(&self) -> u32 {
        // prefix is 8..=30 by construction, so the shift never overflows.
        u32::MAX << (32 - u32::from(self.prefix))
    }
}

impl FromStr for CidrV4 {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let because = |why: &str| format!("{} ({why})", CidrV4::EXPECTED);
        let (addr, prefix) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| because("no /prefix"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| because(&format!("{addr:?} is not an IPv4 address")))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| because(&format!("{prefix:?} is not a prefix length")))?;
        if addr.octets()[0] != 127 || prefix < 8 {
            return Err(because("it is not inside 127.0.0.0/8"));
        }
        if prefix > 30 {
            return Err(because("a /31 or /32 leaves no address for a VM"));
        }
        let cidr = CidrV4 {
            network: addr,
            prefix,
        };
        let network = Ipv4Addr::from(u32::from(addr) & cidr.mask());
        if network != addr {
            return Err(because(&format!(
                "host bits are set: the network is {network}/{prefix}"
            )));
        }
        Ok(cidr)
    }
}

impl fmt::Display for CidrV4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_loopback_networks() {
        let c: CidrV4 = "127.0.9.16/28".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(127, 0, 9, 16));
        assert_eq!(c.last(), Ipv4Addr::new(127, 0, 9, 31));
        assert_eq!(c.addresses().count(), 16);
        assert!(c.contains(Ipv4Addr::new(127, 0, 9, 20)));
        assert!(!c.contains(Ipv4Addr::new(127, 0, 9, 32)));
        let whole: CidrV4 = " 127.0.0.0/8 ".parse().unwrap();
        assert_eq!(whole.last(), Ipv4Addr::new(127, 255, 255, 255));
        assert_eq!(
            "127.0.1.0/30".parse::<CidrV4>().unwrap().last().octets()[3],
            3
        );
    }

    #[test]
    fn cidr_errors_say_what_was_expected_and_why() {
        let cases = [
            ("127.0.1.0", "no /prefix"),
            ("localhost/24", "\"localhost\" is not an IPv4 address"),
            ("127.0.1.0/33", "\"33\" is not a prefix length"),
            ("127.0.1.0/x", "\"x\" is not a prefix length"),
            ("10.0.0.0/24", "it is not inside 127.0.0.0/8"),
            ("0.0.0.0/0", "it is not inside 127.0.0.0/8"),
            ("127.0.1.0/31", "a /31 or /32 leaves no address for a VM"),
            (
                "127.0.1.5/24",
                "host bits are set: the network is 127.0.1.0/24",
            ),
        ];
        for (text, why) in cases {
            let err = text.parse::<CidrV4>().unwrap_err();
            assert_eq!(err, format!("{} ({why})", CidrV4::EXPECTED), "{text}");
        }
    }
}
