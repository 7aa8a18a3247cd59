//! The private DNS server of the DNS tests: BIND 9 on a loopback port, authoritative for a test
//! zone that accepts RFC 2136 updates signed with a TSIG key, for names at or under the base
//! domain only (the zone is larger, as in a real setup).
//!
//! `e2e/dns.sh up` starts it and prints the variables read here; `e2e/test.sh` exports them. A
//! test that needs the server and finds them unset fails and says how to start it.

use anyhow::{Context, bail};
use std::net::SocketAddr;

/// The server's address (`127.0.0.1:19353`).
pub const SERVER_ENV: &str = "PREVIEWD_TEST_DNS_SERVER";
/// The zone it is authoritative for (`test`).
pub const ZONE_ENV: &str = "PREVIEWD_TEST_DNS_ZONE";
/// The previews' base domain inside the zone (`preview.test`): the only names the key may change.
pub const BASE_DOMAIN_ENV: &str = "PREVIEWD_TEST_DNS_BASE_DOMAIN";
/// The name of the TSIG key allowed to update the zone.
pub const TSIG_NAME_ENV: &str = "PREVIEWD_TEST_DNS_TSIG_NAME";
/// That key's secret, base64.
pub const TSIG_SECRET_ENV: &str = "PREVIEWD_TEST_DNS_TSIG_SECRET";

/// The test DNS server, as `e2e/dns.sh` describes it.
#[derive(Clone)]
pub struct TestDnsServer {
    pub server: SocketAddr,
    pub zone: String,
    /// Previews' hostnames go under it; the key may not change names outside it.
    pub base_domain: String,
    pub tsig_name: String,
    /// Base64, as `tsig-keygen` prints it.
    pub tsig_secret: String,
}

impl std::fmt::Debug for TestDnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDnsServer")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("base_domain", &self.base_domain)
            .field("tsig_name", &self.tsig_name)
            .finish_non_exhaustive()
    }
}

fn var(name: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => bail!(
            "{name} is not set. The DNS tests need a real DNS server: run them through `e2e/test.sh`, \
             or start one with `eval \"$(e2e/dns.sh up)\"`"
        ),
    }
}

/// The server started by `e2e/dns.sh up`; an error naming the script when it is not configured.
pub fn server() -> anyhow::Result<TestDnsServer> {
    let address = var(SERVER_ENV)?;
    let server = address.parse().with_context(|| format!("{SERVER_ENV}={address:?} is not an ip:port"))?;
    Ok(TestDnsServer {
        server,
        zone: var(ZONE_ENV)?,
        base_domain: var(BASE_DOMAIN_ENV)?,
        tsig_name: var(TSIG_NAME_ENV)?,
        tsig_secret: var(TSIG_SECRET_ENV)?,
    })
}

/// A label no other test uses: `<prefix>-<12 hex digits>`.
pub fn unique_label(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// A local address nothing listens on (a port bound, then released), for unreachable-server tests.
pub fn closed_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let address = listener.local_addr()?;
    drop(listener);
    Ok(address)
}
