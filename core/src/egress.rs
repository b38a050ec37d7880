//! Egress policy: which addresses the service may connect to on a tenant's behalf (webhook
//! endpoints), so a tenant cannot aim the service at its own host or network (SSRF).
//!
//! Refused: loopback, private, link-local, carrier-grade NAT, unique-local, multicast,
//! unspecified, and broadcast/reserved/documentation ranges; IPv6 outside global unicast
//! (2000::/3); and IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64,
//! 6to4), judged by the IPv4 address they carry. An operator's allow-list of CIDRs
//! (`webhooks.allow_cidrs`) overrides a refusal, for internal deployments and tests.
//!
//! The rule is checked twice: when an endpoint is written ([`check_endpoint`]: every address
//! the host resolves to must pass) and when a delivery connects ([`resolve_allowed`], used as
//! the HTTP client's resolver, so only checked addresses are ever connected to and DNS cannot
//! rebind between check and connect; [`check_literal`] for hosts that are IP literals, which
//! bypass resolvers).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{CoreError, CoreResult};

/// How long a name lookup may take before the host counts as not resolving.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Loopback,
    Private,
    LinkLocal,
    CarrierGradeNat,
    UniqueLocal,
    Multicast,
    Unspecified,
    /// Broadcast, reserved for future use, documentation, benchmarking, protocol assignments,
    /// and IPv6 outside global unicast.
    Reserved,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::CarrierGradeNat => "a carrier-grade NAT address",
            Self::UniqueLocal => "a unique-local address",
            Self::Multicast => "a multicast address",
            Self::Unspecified => "an unspecified address",
            Self::Reserved => "a reserved address",
        })
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

/// Refused IPv4 ranges (RFC 6890 special-purpose registry, the parts not globally reachable).
const REFUSED_V4: [(Ipv4Net, AddressClass); 15] = [
    (v4(0, 0, 0, 0, 8), AddressClass::Unspecified),
    (v4(10, 0, 0, 0, 8), AddressClass::Private),
    (v4(100, 64, 0, 0, 10), AddressClass::CarrierGradeNat),
    (v4(127, 0, 0, 0, 8), AddressClass::Loopback),
    (v4(169, 254, 0, 0, 16), AddressClass::LinkLocal),
    (v4(172, 16, 0, 0, 12), AddressClass::Private),
    (v4(192, 0, 0, 0, 24), AddressClass::Reserved),
    (v4(192, 0, 2, 0, 24), AddressClass::Reserved),
    (v4(192, 88, 99, 0, 24), AddressClass::Reserved),
    (v4(192, 168, 0, 0, 16), AddressClass::Private),
    (v4(198, 18, 0, 0, 15), AddressClass::Reserved),
    (v4(198, 51, 100, 0, 24), AddressClass::Reserved),
    (v4(203, 0, 113, 0, 24), AddressClass::Reserved),
    (v4(224, 0, 0, 0, 4), AddressClass::Multicast),
    // Includes the broadcast address 255.255.255.255.
    (v4(240, 0, 0, 0, 4), AddressClass::Reserved),
];

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// Refused IPv6 ranges inside global unicast (everything outside 2000::/3 is refused too).
const REFUSED_V6: [(Ipv6Net, AddressClass); 3] = [
    // Documentation.
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        AddressClass::Reserved,
    ),
    // Teredo: tunnels to an (obfuscated) IPv4 address we would not see.
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        AddressClass::Reserved,
    ),
    // NAT64 for local use (RFC 8215).
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        AddressClass::Reserved,
    ),
];

/// The IPv4 address an IPv6 address carries, if it is one of the forms that reach it:
/// IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96), 6to4 (2002::/16).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // :: and ::1 are IPv6's own unspecified and loopback addresses, not IPv4-compatible.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    REFUSED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, class)| *class)
}

/// Why `ip` is refused (before any allow-list), or `None` for a public address. For an IPv6
/// form that embeds an IPv4 address, the class is the embedded address's.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => {
            if let Some(inner) = embedded_ipv4(ip) {
                return classify_v4(inner);
            }
            let first = ip.segments()[0];
            if ip.is_unspecified() {
                Some(AddressClass::Unspecified)
            } else if ip.is_loopback() {
                Some(AddressClass::Loopback)
            } else if first & 0xffc0 == 0xfe80 {
                Some(AddressClass::LinkLocal)
            } else if first & 0xfe00 == 0xfc00 {
                Some(AddressClass::UniqueLocal)
            } else if first & 0xff00 == 0xff00 {
                Some(AddressClass::Multicast)
            } else if first & 0xe000 != 0x2000 {
                // Not global unicast: site-local, discard-only, unassigned, …
                Some(AddressClass::Reserved)
            } else {
                REFUSED_V6
                    .iter()
                    .find(|(net, _)| net.contains(&ip))
                    .map(|(_, class)| *class)
            }
        }
    }
}

/// An address the policy refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub address: IpAddr,
    pub class: AddressClass,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                Some(inner) => write!(
                    f,
                    "{v6} (which carries the IPv4 address {inner}), {}",
                    self.class
                ),
                None => write!(f, "{v6}, {}", self.class),
            },
            IpAddr::V4(v4) => write!(f, "{v4}, {}", self.class),
        }
    }
}

/// A CIDR in `webhooks.allow_cidrs` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` in webhooks.allow_cidrs is not a CIDR (write e.g. `10.1.0.0/16`, `fd00::/8` or a single address)"
)]
pub struct BadCidr(pub String);

/// Parse `10.1.0.0/16`, `fd00::/8`, or a single address (a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<IpNet, BadCidr> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| BadCidr(text.to_string()))
}

/// The refusal rule plus the operator's allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<IpNet>,
}

impl EgressPolicy {
    /// Refuse every non-public address; `allow` overrides the refusal for its ranges.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// The policy for the configured allow-list; a bad entry is an error naming it.
    pub fn from_cidrs<S: AsRef<str>>(cidrs: &[S]) -> Result<Self, BadCidr> {
        cidrs
            .iter()
            .map(|c| parse_cidr(c.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self::new)
    }

    /// The allow-list.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        let inner = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || inner.is_some_and(|inner| net.contains(&inner)))
    }

    /// May the service connect to `ip`?
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        match classify(ip) {
            Some(class) if !self.is_allowed(ip) => Err(Refusal { address: ip, class }),
            _ => Ok(()),
        }
    }
}

/// Why a host gave no address the service may connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address of the host is refused.
    #[error("`{host}` resolves only to refused addresses ({})", list(.refusals))]
    Refused {
        host: String,
        refusals: Vec<Refusal>,
    },
    /// The lookup failed, timed out, or found nothing.
    #[error("`{host}` does not resolve: {reason}")]
    Unresolved { host: String, reason: String },
}

fn list(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every address `host` (a name or an IP literal) resolves to.
pub async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    let unresolved = |reason: String| ResolveError::Unresolved {
        host: host.to_string(),
        reason,
    };
    let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| unresolved("the lookup timed out".into()))?
        .map_err(|e| unresolved(e.to_string()))?
        .collect::<Vec<_>>();
    if found.is_empty() {
        return Err(unresolved("no addresses".into()));
    }
    Ok(found)
}

/// The addresses of `host` the policy allows, for connecting: refused ones are dropped (and
/// logged); none left is [`ResolveError::Refused`].
pub async fn resolve_allowed(
    policy: &EgressPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let mut allowed = Vec::new();
    let mut refusals = Vec::new();
    for addr in lookup(host, port).await? {
        match policy.check(addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(refusal) => refusals.push(refusal),
        }
    }
    if !refusals.is_empty() {
        tracing::warn!(host, refused = %list(&refusals), "egress: dropped refused addresses");
    }
    if allowed.is_empty() {
        return Err(ResolveError::Refused {
            host: host.to_string(),
            refusals,
        });
    }
    Ok(allowed)
}

/// For a URL whose host is an IP literal (which HTTP clients connect to without resolving): is
/// it allowed? Named hosts pass here; they are checked by [`resolve_allowed`] when connecting.
pub fn check_literal(policy: &EgressPolicy, url: &url::Url) -> Result<(), Refusal> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => policy.check(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => policy.check(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) | None => Ok(()),
    }
}

const ONLY_PUBLIC: &str =
    "webhooks can only target public addresses (or ones in `webhooks.allow_cidrs`)";

/// Check an endpoint URL as it is written: its host must resolve, and every address it resolves
/// to must be allowed (a name with one private address among public ones is refused too, as a
/// connection may pick any). `BAD_USER_INPUT` on `field` naming the address and its class.
pub async fn check_endpoint(policy: &EgressPolicy, field: &str, text: &str) -> CoreResult<()> {
    let url = url::Url::parse(text)
        .map_err(|e| CoreError::bad_field(field, format!("`{text}` is not a URL: {e}")))?;
    let port = url.port_or_known_default().unwrap_or(0);
    let addresses: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => lookup(name, port)
            .await
            .map_err(|err| {
                tracing::debug!(%err, "egress: endpoint host does not resolve");
                CoreError::bad_field(
                    field,
                    format!("`{text}`: the host does not resolve to an address; {ONLY_PUBLIC}"),
                )
            })?
            .into_iter()
            .map(|a| a.ip())
            .collect(),
        None => {
            return Err(CoreError::bad_field(field, format!("`{text}` has no host")));
        }
    };
    for ip in addresses {
        policy.check(ip).map_err(|refusal| {
            CoreError::bad_field(
                field,
                format!("`{text}` resolves to {refusal}; {ONLY_PUBLIC}"),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<AddressClass> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn every_refused_ipv4_range_is_refused_at_both_ends() {
        use AddressClass::*;
        for (first, last, expected) in [
            ("0.0.0.0", "0.255.255.255", Unspecified),
            ("10.0.0.0", "10.255.255.255", Private),
            ("100.64.0.0", "100.127.255.255", CarrierGradeNat),
            ("127.0.0.0", "127.255.255.255", Loopback),
            ("169.254.0.0", "169.254.255.255", LinkLocal),
            ("172.16.0.0", "172.31.255.255", Private),
            ("192.0.0.0", "192.0.0.255", Reserved),
            ("192.0.2.0", "192.0.2.255", Reserved),
            ("192.88.99.0", "192.88.99.255", Reserved),
            ("192.168.0.0", "192.168.255.255", Private),
            ("198.18.0.0", "198.19.255.255", Reserved),
            ("198.51.100.0", "198.51.100.255", Reserved),
            ("203.0.113.0", "203.0.113.255", Reserved),
            ("224.0.0.0", "239.255.255.255", Multicast),
            ("240.0.0.0", "255.255.255.255", Reserved),
        ] {
            assert_eq!(class(first), Some(expected), "{first}");
            assert_eq!(class(last), Some(expected), "{last}");
        }
    }

    #[test]
    fn neighbours_of_refused_ranges_are_public() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn refused_ipv6_ranges() {
        use AddressClass::*;
        for (ip, expected) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fdff:ffff::1", UniqueLocal),
            ("ff00::", Multicast),
            ("ff02::1", Multicast),
            ("fec0::1", Reserved),
            ("100::1", Reserved),
            ("2001:db8::1", Reserved),
            ("2001::1", Reserved),
            ("64:ff9b:1::1", Reserved),
            ("4000::1", Reserved),
        ] {
            assert_eq!(class(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_embedding_ipv4_are_judged_by_the_ipv4_address() {
        use AddressClass::*;
        for (ip, expected) in [
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::127.0.0.1", Some(Loopback)),
            ("::192.168.1.1", Some(Private)),
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("64:ff9b::100.64.0.1", Some(CarrierGradeNat)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:a00:1::1", Some(Private)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::8.8.8.8", None),
            ("2002:808:808::1", None),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn the_allow_list_overrides_refusals_for_its_ranges_only() {
        let policy = EgressPolicy::from_cidrs(&["127.0.0.0/8", "::1/128", "10.1.0.0/16"]).unwrap();
        for ok in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "10.1.2.3",
            "::ffff:127.0.0.1",
            "8.8.8.8",
        ] {
            assert_eq!(policy.check(ok.parse().unwrap()), Ok(()), "{ok}");
        }
        for refused in [
            "10.2.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
        ] {
            assert!(policy.check(refused.parse().unwrap()).is_err(), "{refused}");
        }
        let none = EgressPolicy::default();
        let refusal = none.check("127.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(refusal.class, AddressClass::Loopback);
        assert_eq!(refusal.to_string(), "127.0.0.1, a loopback address");
        assert_eq!(
            none.check("::ffff:127.0.0.1".parse().unwrap())
                .unwrap_err()
                .to_string(),
            "::ffff:127.0.0.1 (which carries the IPv4 address 127.0.0.1), a loopback address"
        );
    }

    #[test]
    fn cidrs_parse_or_are_named_in_the_error() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            parse_cidr(" 10.9.9.9/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_cidr("fd00::/8").unwrap().to_string(), "fd00::/8");
        for bad in ["10.0.0.0/33", "::/129", "localhost", "10.0.0/8", ""] {
            assert_eq!(parse_cidr(bad), Err(BadCidr(bad.to_string())), "{bad}");
        }
        let err = EgressPolicy::from_cidrs(&["127.0.0.0/8", "nope/1"]).unwrap_err();
        assert!(err.to_string().contains("`nope/1`"), "{err}");
    }

    #[tokio::test]
    async fn endpoints_are_checked_by_every_address_they_resolve_to() {
        let none = EgressPolicy::default();
        for (url, needle) in [
            (
                "http://127.0.0.1:9/",
                "resolves to 127.0.0.1, a loopback address",
            ),
            ("http://[::1]:9/", "::1, a loopback address"),
            ("http://localhost:9/", "a loopback address"),
            (
                "http://[::ffff:127.0.0.1]/",
                "carries the IPv4 address 127.0.0.1",
            ),
            ("http://2130706433/", "127.0.0.1, a loopback address"),
            ("http://10.0.0.1/", "a private address"),
            ("http://169.254.169.254/latest", "a link-local address"),
            ("http://100.64.0.1/", "a carrier-grade NAT address"),
            ("http://0.0.0.0/", "an unspecified address"),
        ] {
            let err = check_endpoint(&none, "url", url).await.unwrap_err();
            assert_eq!(err.code(), "BAD_USER_INPUT");
            let text = err.to_string();
            assert!(text.contains(needle), "{url}: {text}");
            assert!(text.contains("webhooks.allow_cidrs"), "{text}");
        }
        let loopback = EgressPolicy::from_cidrs(&["127.0.0.0/8", "::1/128"]).unwrap();
        check_endpoint(&loopback, "url", "http://localhost:9/")
            .await
            .unwrap();
        check_endpoint(&loopback, "url", "http://[::1]:9/")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn connecting_resolves_only_to_allowed_addresses() {
        let none = EgressPolicy::default();
        let err = resolve_allowed(&none, "localhost", 80).await.unwrap_err();
        assert!(matches!(err, ResolveError::Refused { .. }), "{err}");
        let v4_only = EgressPolicy::from_cidrs(&["127.0.0.0/8"]).unwrap();
        let addrs = resolve_allowed(&v4_only, "localhost", 80).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()));
        let url = url::Url::parse("http://[::ffff:10.0.0.1]/").unwrap();
        assert!(check_literal(&none, &url).is_err());
        let named = url::Url::parse("http://example.com/").unwrap();
        assert!(check_literal(&none, &named).is_ok());
    }
}
