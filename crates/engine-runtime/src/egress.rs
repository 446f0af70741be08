//! [`Egress`]: which network addresses the engine connects to. Names are resolved by
//! `EgressResolver`, which drops the addresses the policy refuses (so that a name resolving to
//! a private address, or one rebinding to it between two lookups, never gets a connection), and
//! URLs whose host is an address are checked by [`Egress::check_url`] before the request is
//! made: a refusal is [`AddressRefused`], and nothing is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Which addresses requests may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Egress {
    /// Public addresses and loopback (`127.0.0.0/8`, `::1`); private networks and link-local
    /// addresses (the cloud metadata address among them) are refused. `engine serve`'s
    /// default.
    Public,
    /// Public, loopback and private networks (`10.0.0.0/8`, `172.16.0.0/12`,
    /// `192.168.0.0/16`, `100.64.0.0/10`, `fc00::/7`); link-local still refused.
    Private,
    /// Every address: `engine run`'s default.
    #[default]
    Any,
}

/// What an address is, as [`Egress`] judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Anywhere else.
    Public,
    /// This machine: `127.0.0.0/8`, `::1`, and the unspecified `0.0.0.0`/`::`, which reach it too.
    Loopback,
    /// A private network: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, the shared
    /// `100.64.0.0/10`, unique local `fc00::/7` and the old site-local `fec0::/10`.
    Private,
    /// Link-local `169.254.0.0/16` and `fe80::/10`, and the cloud metadata addresses outside
    /// them (`fd00:ec2::254`, `100.100.100.200`).
    LinkLocal,
}

impl AddressClass {
    /// The class of `address`; an IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`) is judged as
    /// the IPv4 address.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of_v4(v4),
                None => Self::of_v6(v6),
            },
        }
    }

    fn of_v4(address: Ipv4Addr) -> Self {
        let [first, second, ..] = address.octets();
        if address.is_loopback() || first == 0 {
            Self::Loopback
        } else if address.is_link_local() || address == Ipv4Addr::new(100, 100, 100, 200) {
            Self::LinkLocal
        } else if address.is_private() || (first == 100 && (64..128).contains(&second)) {
            Self::Private
        } else {
            Self::Public
        }
    }

    fn of_v6(address: Ipv6Addr) -> Self {
        let first = address.segments()[0];
        if address.is_loopback() || address.is_unspecified() {
            Self::Loopback
        } else if address.is_unicast_link_local()
            || address == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        {
            Self::LinkLocal
        } else if address.is_unique_local() || first & 0xffc0 == 0xfec0 {
            Self::Private
        } else {
            Self::Public
        }
    }

    /// How messages name the class: `a private`, `a link-local`.
    fn described(self) -> &'static str {
        match self {
            Self::Public => "a public",
            Self::Loopback => "a loopback",
            Self::Private => "a private",
            Self::LinkLocal => "a link-local",
        }
    }
}

impl Egress {
    /// True when the policy lets requests go to an address of `class`.
    pub fn allows(self, class: AddressClass) -> bool {
        match class {
            AddressClass::Public | AddressClass::Loopback => true,
            AddressClass::Private => matches!(self, Self::Private | Self::Any),
            AddressClass::LinkLocal => self == Self::Any,
        }
    }

    /// The policy's name, as `--egress` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Any => "any",
        }
    }

    /// Checks `address`, the address of `host`.
    ///
    /// Fails with [`AddressRefused`] when the policy refuses its class.
    pub fn check(self, host: &str, address: IpAddr) -> Result<(), AddressRefused> {
        let class = AddressClass::of(address);
        if self.allows(class) {
            return Ok(());
        }
        Err(AddressRefused {
            host: host.to_owned(),
            address,
            class,
            policy: self,
        })
    }

    /// Checks the host of `url` when it is an address (`http://169.254.169.254/`): those are
    /// connected to without resolving, so the resolver never sees them.
    ///
    /// Fails with [`AddressRefused`] when the policy refuses its class.
    pub fn check_url(self, url: &url::Url) -> Result<(), AddressRefused> {
        let address = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) | None => return Ok(()),
        };
        self.check(url.host_str().unwrap_or_default(), address)
    }
}

impl FromStr for Egress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "public" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            "any" => Ok(Self::Any),
            _ => Err(format!(
                "unknown egress policy `{text}`: expected `public`, `private` or `any`"
            )),
        }
    }
}

/// A connection the [`Egress`] policy refused: nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AddressRefused {
    /// The host of the URL.
    pub host: String,
    /// The address it is or resolved to (the first refused one).
    pub address: IpAddr,
    /// Its class.
    pub class: AddressClass,
    /// The policy that refused it.
    pub policy: Egress,
}

impl std::fmt::Display for AddressRefused {
    /// `` `internal.example` resolves to 10.0.0.7, a private address, which the egress policy
    /// `public` refuses ``; a host that is the address itself is not repeated.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let literal = self.host.trim_start_matches('[').trim_end_matches(']');
        if literal.parse::<IpAddr>().ok() == Some(self.address) {
            write!(formatter, "`{}` is", self.host)?;
        } else {
            write!(formatter, "`{}` resolves to {},", self.host, self.address)?;
        }
        write!(
            formatter,
            " {} address, which the egress policy `{}` refuses",
            self.class.described(),
            self.policy.name()
        )
    }
}

/// Resolves names with the system's resolver and keeps only the addresses the policy allows:
/// a name whose addresses are all refused fails with [`AddressRefused`].
#[derive(Debug, Clone)]
pub(crate) struct EgressResolver {
    policy: Egress,
    /// Answers instead of the system's resolver (tests).
    fixed: Option<Vec<(String, IpAddr)>>,
}

impl EgressResolver {
    pub(crate) fn new(policy: Egress) -> Self {
        Self {
            policy,
            fixed: None,
        }
    }

    /// A resolver that answers `names` itself, for tests of names resolving to refused
    /// addresses.
    #[cfg(test)]
    pub(crate) fn answering(policy: Egress, names: Vec<(String, IpAddr)>) -> Self {
        Self {
            policy,
            fixed: Some(names),
        }
    }

    /// The addresses of `host` that `policy` allows.
    fn filter(
        policy: Egress,
        host: &str,
        found: impl Iterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, AddressRefused> {
        let mut refused = None;
        let allowed: Vec<SocketAddr> = found
            .filter(|address| match policy.check(host, address.ip()) {
                Ok(()) => true,
                Err(error) => {
                    refused.get_or_insert(error);
                    false
                }
            })
            .collect();
        match refused {
            Some(error) if allowed.is_empty() => Err(error),
            _ => Ok(allowed),
        }
    }
}

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        let fixed = self.fixed.as_ref().map(|names| {
            names
                .iter()
                .filter(|(known, _)| *known == host)
                .map(|(_, address)| SocketAddr::new(*address, 0))
                .collect::<Vec<_>>()
        });
        Box::pin(async move {
            let found: Vec<SocketAddr> = match fixed {
                Some(found) => found,
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let allowed = Self::filter(policy, &host, found.into_iter())?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> AddressClass {
        AddressClass::of(text.parse().unwrap())
    }

    #[test]
    fn addresses_fall_into_their_classes() {
        for (text, expected) in [
            ("8.8.8.8", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
            ("100.63.255.255", AddressClass::Public),
            ("172.32.0.1", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("0.0.0.0", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("fd12:3456::1", AddressClass::Private),
            ("fc00::1", AddressClass::Private),
            ("fec0::1", AddressClass::Private),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("169.254.0.1", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("fd00:ec2::254", AddressClass::LinkLocal),
            ("100.100.100.200", AddressClass::LinkLocal),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
        ] {
            assert_eq!(class(text), expected, "{text}");
        }
    }

    #[test]
    fn each_policy_allows_its_classes() {
        use AddressClass::{LinkLocal, Loopback, Private, Public};
        let allowed = |policy: Egress| -> Vec<AddressClass> {
            [Public, Loopback, Private, LinkLocal]
                .into_iter()
                .filter(|class| policy.allows(*class))
                .collect()
        };
        assert_eq!(allowed(Egress::Public), [Public, Loopback]);
        assert_eq!(allowed(Egress::Private), [Public, Loopback, Private]);
        assert_eq!(allowed(Egress::Any), [Public, Loopback, Private, LinkLocal]);
        assert_eq!(Egress::default(), Egress::Any);
        for policy in [Egress::Public, Egress::Private, Egress::Any] {
            assert_eq!(policy.name().parse::<Egress>(), Ok(policy));
        }
        assert!("none".parse::<Egress>().is_err());
    }

    #[test]
    fn a_url_whose_host_is_an_address_is_checked_and_a_name_is_left_to_the_resolver() {
        let check = |policy: Egress, url: &str| policy.check_url(&url::Url::parse(url).unwrap());
        let refused = check(Egress::Public, "http://169.254.169.254/latest/meta-data").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "`169.254.169.254` is a link-local address, which the egress policy `public` refuses"
        );
        assert_eq!(
            check(Egress::Private, "http://[fe80::1]:8080/")
                .unwrap_err()
                .to_string(),
            "`[fe80::1]` is a link-local address, which the egress policy `private` refuses"
        );
        assert!(check(Egress::Public, "http://10.0.0.1/").is_err());
        assert!(check(Egress::Private, "http://10.0.0.1/").is_ok());
        assert!(check(Egress::Public, "http://127.0.0.1:9/").is_ok());
        assert!(check(Egress::Public, "https://metadata.google.internal/").is_ok());
        assert!(check(Egress::Any, "http://169.254.169.254/").is_ok());
    }

    #[test]
    fn a_name_keeps_its_allowed_addresses_and_fails_when_none_is_left() {
        let addresses = |texts: &[&str]| -> Vec<SocketAddr> {
            texts
                .iter()
                .map(|text| SocketAddr::new(text.parse().unwrap(), 0))
                .collect()
        };
        let mixed = addresses(&["10.0.0.7", "93.184.215.14"]);
        assert_eq!(
            EgressResolver::filter(Egress::Public, "v.example", mixed.into_iter()).unwrap(),
            addresses(&["93.184.215.14"])
        );
        let private = addresses(&["10.0.0.7", "fd00::7"]);
        let error = EgressResolver::filter(Egress::Public, "internal.example", private.into_iter())
            .unwrap_err();
        assert_eq!(error.address, "10.0.0.7".parse::<IpAddr>().unwrap());
        assert_eq!(error.class, AddressClass::Private);
    }
}
