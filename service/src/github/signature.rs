//! `X-Hub-Signature-256` verification: HMAC-SHA256 of the raw request body under a webhook
//! secret, compared in constant time by `Mac::verify_slice`. Several secrets may be configured
//! so that a secret can be rotated without refusing deliveries signed with the old one.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Why a delivery's signature was not accepted. The messages never contain the signature or a
/// secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 must be `sha256=` followed by 64 hexadecimal digits")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body under any configured webhook secret")]
    Mismatch,
}

/// The configured webhook secrets.
#[derive(Clone)]
pub struct WebhookSecrets(Vec<SecretString>);

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} configured)", self.0.len())
    }
}

impl WebhookSecrets {
    pub fn new(secrets: Vec<SecretString>) -> Self {
        Self(secrets)
    }

    /// Checks `header` (the value of `X-Hub-Signature-256`) against `body`.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_digest = header.strip_prefix(b"sha256=").ok_or(SignatureError::Malformed)?;
        let mut expected = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut expected).map_err(|_| SignatureError::Malformed)?;
        let matched = self.0.iter().any(|secret| {
            // HMAC accepts keys of any length, so this cannot fail; treat it as a mismatch if
            // it ever does rather than panicking in the request path.
            Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
                .map(|mac| mac.chain_update(body).verify_slice(&expected).is_ok())
                .unwrap_or(false)
        });
        if matched { Ok(()) } else { Err(SignatureError::Mismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(values: &[&str]) -> WebhookSecrets {
        WebhookSecrets::new(values.iter().map(|s| SecretString::from(s.to_string())).collect())
    }

    /// The test vector from GitHub's "Validating webhook deliveries" documentation.
    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE: &[u8] = b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_published_test_vector_verifies() {
        assert_eq!(secrets(&[GITHUB_SECRET]).verify(Some(GITHUB_SIGNATURE), GITHUB_BODY), Ok(()));
    }

    #[test]
    fn any_configured_secret_may_match() {
        let both = secrets(&["new secret", GITHUB_SECRET]);
        assert_eq!(both.verify(Some(GITHUB_SIGNATURE), GITHUB_BODY), Ok(()));
    }

    #[test]
    fn wrong_body_or_secret_is_a_mismatch() {
        assert_eq!(
            secrets(&[GITHUB_SECRET]).verify(Some(GITHUB_SIGNATURE), b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(secrets(&["other"]).verify(Some(GITHUB_SIGNATURE), GITHUB_BODY), Err(SignatureError::Mismatch));
    }

    #[test]
    fn missing_and_malformed_headers_are_told_apart() {
        let s = secrets(&[GITHUB_SECRET]);
        assert_eq!(s.verify(None, GITHUB_BODY), Err(SignatureError::Missing));
        assert_eq!(s.verify(Some(b"sha1=abc"), GITHUB_BODY), Err(SignatureError::Malformed));
        assert_eq!(s.verify(Some(b"sha256=zz"), GITHUB_BODY), Err(SignatureError::Malformed));
        assert_eq!(s.verify(Some(&GITHUB_SIGNATURE[..70]), GITHUB_BODY), Err(SignatureError::Malformed));
    }

    #[test]
    fn debug_output_hides_secrets() {
        assert_eq!(format!("{:?}", secrets(&[GITHUB_SECRET])), "WebhookSecrets(1 configured)");
    }
}
