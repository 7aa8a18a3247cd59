//! The `rfc2136` provider's half: DNS UPDATE messages (RFC 2136) signed with TSIG (RFC 8945),
//! sent over TCP to the zone's primary server, and their answers checked.

use super::{Dns, DnsError, Target, UPDATE_TIMEOUT, fqdn};
use hickory_proto::op::{Message, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(super) struct Updater {
    pub(super) server: SocketAddr,
    pub(super) zone: Name,
    pub(super) signer: TSigner,
}

impl Dns {
    pub(super) async fn update(&self, updater: &Updater, host: &str, add: bool) -> Result<(), DnsError> {
        let server = updater.server.to_string();
        let name = fqdn(host).map_err(DnsError::Config)?;
        if !updater.zone.zone_of(&name) || updater.zone == name {
            return Err(DnsError::Config(format!(
                "{host} is not a name inside zone {} (dns.rfc2136.zone)",
                updater.zone.to_ascii().trim_end_matches('.')
            )));
        }
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut zone = Query::new();
        zone.set_name(updater.zone.clone()).set_query_class(DNSClass::IN).set_query_type(RecordType::SOA);
        message.add_zone(zone);
        // RFC 2136 §2.5.2: delete an RRset: class ANY, TTL 0, no data.
        for record_type in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let mut delete = Record::update0(name.clone(), 0, record_type);
            delete.dns_class = DNSClass::ANY;
            message.add_update(delete);
        }
        if add {
            let data = match &self.target {
                Some(Target::A(ip)) => RData::A(A(*ip)),
                Some(Target::Aaaa(ip)) => RData::AAAA(AAAA(*ip)),
                Some(Target::Cname(target)) => RData::CNAME(CNAME(fqdn(target).map_err(DnsError::Config)?)),
                None => {
                    return Err(DnsError::Config("dns.target: is required when dns.provider is rfc2136".to_owned()));
                }
            };
            message.add_update(Record::from_rdata(name.clone(), self.ttl, data));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let verifier =
            message.finalize(&updater.signer, now).map_err(|e| DnsError::Config(format!("signing the update: {e}")))?;
        let request = message.to_vec().map_err(|e| DnsError::Config(format!("encoding the update: {e}")))?;

        let answer = match tokio::time::timeout(UPDATE_TIMEOUT, exchange_tcp(updater.server, &request)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(DnsError::Unreachable { server, detail: e.to_string() }),
            Err(_) => {
                return Err(DnsError::Unreachable {
                    server,
                    detail: format!("no answer within {}", humantime::format_duration(UPDATE_TIMEOUT)),
                });
            }
        };
        let response = Message::from_vec(&answer)
            .map_err(|e| DnsError::BadResponse { server: server.clone(), detail: format!("not a DNS message: {e}") })?;
        if response.id != message.id {
            return Err(DnsError::BadResponse {
                server,
                detail: "the answer's id does not match the update's".to_owned(),
            });
        }
        if response.response_code != ResponseCode::NoError {
            let mut rcode = rcode_name(response.response_code).to_owned();
            if let Some(error) = response.signature().and_then(|s| s.data.error) {
                rcode = format!("{rcode}/{}", tsig_error_name(error));
            }
            tracing::warn!(%server, host, %rcode, "DNS update refused");
            return Err(DnsError::Refused { server, rcode });
        }
        match verifier {
            Some(mut verifier) => {
                verifier.verify(&answer).map_err(|e| DnsError::BadResponse {
                    server: server.clone(),
                    detail: format!("the answer's TSIG signature does not verify: {e}"),
                })?;
            }
            None => {
                return Err(DnsError::BadResponse { server, detail: "the update was not signed".to_owned() });
            }
        }
        tracing::info!(%server, host, action = if add { "add" } else { "delete" }, "DNS record updated");
        Ok(())
    }
}

pub(super) fn rcode_name(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        ResponseCode::BADVERS => "BADVERS",
        ResponseCode::BADSIG => "BADSIG",
        ResponseCode::BADKEY => "BADKEY",
        ResponseCode::BADTIME => "BADTIME",
        ResponseCode::BADMODE => "BADMODE",
        ResponseCode::BADNAME => "BADNAME",
        ResponseCode::BADALG => "BADALG",
        ResponseCode::BADTRUNC => "BADTRUNC",
        ResponseCode::BADCOOKIE => "BADCOOKIE",
        ResponseCode::Unknown(_) => "unknown rcode",
    }
}

fn tsig_error_name(error: TsigError) -> String {
    match error {
        TsigError::BadSig => "BADSIG".to_owned(),
        TsigError::BadKey => "BADKEY".to_owned(),
        TsigError::BadTime => "BADTIME".to_owned(),
        TsigError::BadTrunc => "BADTRUNC".to_owned(),
        TsigError::Unknown(code) => format!("TSIG error {code}"),
    }
}

/// Sends one DNS message over TCP (two-byte length prefix, RFC 1035 §4.2.2) and reads the answer.
async fn exchange_tcp(server: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let length = u16::try_from(request.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the update is too large"))?;
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let answer_length = stream.read_u16().await?;
    let mut answer = vec![0; usize::from(answer_length)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}
