//! The one outbound HTTP client of Haken, and its URL policy. Hook targets must be HTTPS and
//! public unless the operator allows otherwise (`--insecure-hooks`); the policy is checked
//! when a hook is saved and again at connect time on the resolved addresses, and the vetted
//! addresses are the ones connected to, so a DNS answer that changes cannot reach a private
//! network. Redirects are never followed; timeouts and response sizes are bounded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

/// Longest hook URI accepted.
pub const MAX_URI_LEN: usize = 1024;

/// Whether a hook target is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Allow `http://` and loopback, private and other non-public addresses.
    pub allow_insecure: bool,
}

impl UrlPolicy {
    /// Checks a URI as saved on a hook. The message names what is wrong.
    pub fn check(&self, uri: &str) -> Result<Url, String> {
        if uri.len() > MAX_URI_LEN {
            return Err(format!("must be at most {MAX_URI_LEN} characters"));
        }
        if uri.chars().any(char::is_whitespace) {
            return Err("must not contain whitespace".to_owned());
        }
        let url = Url::parse(uri).map_err(|e| format!("is not a valid URL ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure => {}
            "http" => return Err("must use https (http:// needs the server's --insecure-hooks switch)".to_owned()),
            other => return Err(format!("scheme {other} is not supported; use https")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; use the auth header".to_owned());
        }
        match url.host() {
            None => return Err("must name a host".to_owned()),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if !self.allow_insecure && (d == "localhost" || d.ends_with(".localhost")) {
                    return Err("must not point at localhost".to_owned());
                }
            }
        }
        Ok(url)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if !self.allow_insecure && is_blocked(ip) {
            return Err(format!("points at {ip}, a private or reserved address"));
        }
        Ok(())
    }
}

/// True for addresses hooks must not reach by default: loopback, private, link-local,
/// carrier-grade NAT, documentation, benchmarking, multicast, reserved, and IPv6 forms that
/// embed one of those.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn blocked_v4(ip: Ipv4Addr) -> bool {
    const RANGES: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network"
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // carrier-grade NAT
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (cloud metadata lives here)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast
    ];
    RANGES.iter().any(|(net, p)| in_v4(ip, *net, *p))
}

fn blocked_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d): judge the IPv4 address.
    if seg[..5] == [0, 0, 0, 0, 0] && (seg[5] == 0xffff || seg[5] == 0) {
        let v4 = Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
        return blocked_v4(v4);
    }
    // SIIT (::ffff:0:a.b.c.d) embeds an IPv4 address in the last 32 bits.
    if seg[..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0 {
        let v4 = Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
        return blocked_v4(v4);
    }
    // Local-use NAT64 (64:ff9b:1::/48) may translate to any IPv4 address: block it outright.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        return true;
    }
    // NAT64 (64:ff9b::/96) embeds an IPv4 address in the last 32 bits.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
        return blocked_v4(v4);
    }
    // 6to4 (2002::/16) embeds an IPv4 address in bits 16..48.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new((seg[1] >> 8) as u8, seg[1] as u8, (seg[2] >> 8) as u8, seg[2] as u8);
        return blocked_v4(v4);
    }
    (seg[0] & 0xfe00) == 0xfc00          // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80   // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0   // deprecated site-local fec0::/10
        || (seg[0] & 0xff00) == 0xff00   // multicast
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x2001 && seg[1] == 0)      // Teredo
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // discard-only 100::/64
}

/// Resolves names and drops addresses the policy forbids, so the connection goes only to an
/// address that was checked.
struct GuardedResolver {
    allow_insecure: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_insecure;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| allow || !is_blocked(a.ip())).collect();
            if allowed.is_empty() {
                let msg = if found.is_empty() {
                    format!("{host} does not resolve")
                } else {
                    format!("{host} resolves only to private or reserved addresses")
                };
                return Err(Box::new(std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg)) as _);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// One outbound request.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Bytes of the response body to keep.
    pub max_response: usize,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body was longer than `max_response`.
    pub truncated: bool,
    pub latency: Duration,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The URL or its resolved addresses break the policy.
    Policy(String),
    Timeout,
    Connect(String),
    /// The response could not be read (reset, malformed).
    Io(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Policy(m) => write!(f, "blocked by the URL policy: {m}"),
            SendError::Timeout => f.write_str("timed out"),
            SendError::Connect(m) => write!(f, "connection failed: {m}"),
            SendError::Io(m) => write!(f, "transfer failed: {m}"),
        }
    }
}

/// The shared outbound client: connection reuse per host, no redirects, policy-checked DNS.
#[derive(Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    policy: UrlPolicy,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient").field("policy", &self.policy).finish()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        cur = s.source();
    }
    msg
}

impl OutboundClient {
    pub fn new(policy: UrlPolicy) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the target itself, past the resolver that enforces the policy.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { allow_insecure: policy.allow_insecure }))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("Haken/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| error_chain(&e))?;
        Ok(OutboundClient { client, policy })
    }

    pub fn policy(&self) -> UrlPolicy {
        self.policy
    }

    /// Sends one request within its timeout (connect, send and reading the bounded body).
    pub async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, SendError> {
        let url = self.policy.check(&req.url).map_err(SendError::Policy)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| SendError::Policy(format!("bad header name {k}")))?;
            let value = HeaderValue::from_str(v).map_err(|_| SendError::Policy(format!("bad value for header {k}")))?;
            headers.append(name, value);
        }
        let started = Instant::now();
        let timeout = req.timeout;
        let max = req.max_response;
        let work = async {
            let mut builder = self.client.request(req.method, url).headers(headers);
            if let Some(body) = req.body {
                builder = builder.body(body);
            }
            let mut resp = builder.send().await.map_err(|e| classify(&e))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
                let room = max.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, SendError>((status, headers, body, truncated))
        };
        match tokio::time::timeout(timeout, work).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok((status, headers, body, truncated))) => {
                Ok(OutboundResponse { status, headers, body, truncated, latency: started.elapsed() })
            }
        }
    }
}

fn classify(e: &reqwest::Error) -> SendError {
    let msg = error_chain(e);
    if e.is_timeout() {
        SendError::Timeout
    } else if msg.contains("private or reserved") || msg.contains("does not resolve") {
        SendError::Policy(msg)
    } else if e.is_connect() {
        SendError::Connect(msg)
    } else {
        SendError::Io(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_private_and_reserved_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:db8::1",
            "ff02::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(is_blocked(ip), "{ip} should be blocked");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "100.128.0.1", "172.32.0.1"] {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(!is_blocked(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn uri_policy() {
        let strict = UrlPolicy { allow_insecure: false };
        assert!(strict.check("https://hooks.example.org/okta").is_ok());
        assert!(strict.check("http://hooks.example.org/okta").is_err());
        assert!(strict.check("https://127.0.0.1/x").is_err());
        assert!(strict.check("https://[::1]/x").is_err());
        assert!(strict.check("https://localhost/x").is_err());
        assert!(strict.check("https://10.0.0.5/x").is_err());
        assert!(strict.check("https://user:pw@example.org/").is_err());
        assert!(strict.check("https://example.org/a b").is_err());
        assert!(strict.check("ftp://example.org/").is_err());
        assert!(strict.check(&format!("https://example.org/{}", "a".repeat(1100))).is_err());
        let dev = UrlPolicy { allow_insecure: true };
        assert!(dev.check("http://127.0.0.1:9000/hook").is_ok());
    }

    #[tokio::test]
    async fn resolved_private_addresses_are_refused_at_connect_time() {
        use std::str::FromStr;
        // `localhost` passes the static check of a domain name only in insecure mode, but the
        // resolver is the last line: it must refuse the loopback answer.
        let Ok(name) = Name::from_str("localhost") else { panic!("name") };
        let strict = GuardedResolver { allow_insecure: false };
        let err = strict.resolve(name).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("private or reserved"), "{err}");
        let Ok(name) = Name::from_str("localhost") else { panic!("name") };
        let dev = GuardedResolver { allow_insecure: true };
        assert!(dev.resolve(name).await.is_ok());
    }
}
