//! Deliveries signed the way GitHub signs them, for tests, the demo and benchmarks.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The `X-Hub-Signature-256` value GitHub sends for `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let digest = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map(|mac| hex::encode(mac.chain_update(body).finalize().into_bytes()))
        .unwrap_or_default();
    format!("sha256={digest}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_github_published_test_vector() {
        assert_eq!(
            super::sign("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
