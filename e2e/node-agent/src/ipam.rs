//! Pod address allocation inside the node's pod range; the first address belongs to
//! the bridge (the pods' gateway).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// An IPv4 network such as `10.213.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Config(format!("bad CIDR {s:?}"));
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// The gateway: the network's first host address, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn host_count(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }
}

/// Which pod (by UID) holds which address.
#[derive(Clone, Debug)]
pub struct Ipam {
    cidr: Cidr,
    leases: BTreeMap<Ipv4Addr, String>,
}

impl Ipam {
    /// An allocator for `cidr` with nothing leased.
    pub fn new(cidr: Cidr) -> Self {
        Self {
            cidr,
            leases: BTreeMap::new(),
        }
    }

    /// The address leased to `owner`, leasing the lowest free one if it has none.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr> {
        if let Some((ip, _)) = self.leases.iter().find(|(_, o)| *o == owner) {
            return Ok(*ip);
        }
        let base = u32::from(self.cidr.network);
        let free = (2..=self.cidr.host_count())
            .map(|i| Ipv4Addr::from(base + i))
            .find(|ip| !self.leases.contains_key(ip))
            .ok_or_else(|| Error::AddressesExhausted(self.cidr.to_string()))?;
        self.leases.insert(free, owner.to_owned());
        Ok(free)
    }

    /// Returns `owner`'s address to the pool.
    pub fn release(&mut self, owner: &str) {
        self.leases.retain(|_, o| o != owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises_cidr() {
        let c: Cidr = "10.213.0.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.213.0.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn allocates_lowest_free_address_once_per_owner() {
        let mut ipam = Ipam::new("10.213.0.0/24".parse().unwrap());
        let a = ipam.allocate("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 213, 0, 2));
        assert_eq!(ipam.allocate("a").unwrap(), a);
        let b = ipam.allocate("b").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 213, 0, 3));
        ipam.release("a");
        assert_eq!(ipam.allocate("c").unwrap(), a);
    }

    #[test]
    fn exhausts() {
        let mut ipam = Ipam::new("10.213.0.0/30".parse().unwrap());
        ipam.allocate("a").unwrap();
        assert!(ipam.allocate("b").is_err());
    }
}
