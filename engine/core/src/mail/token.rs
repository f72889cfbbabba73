//! Signed tokens for links in emails: `base64url(lead) . base64url(HMAC)`.
//! The MAC covers the token's purpose and the lead id, so a token can neither
//! be altered to name another lead nor reused for another purpose.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Unsubscribe,
}

impl TokenKind {
    fn label(self) -> &'static [u8] {
        match self {
            TokenKind::Unsubscribe => b"nurture/unsubscribe/v1\0",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("the token's signature does not match")]
    BadSignature,
}

/// The server secret (`--secret`, `NURTURE_SECRET`, or generated once and
/// kept in the database).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(key: Vec<u8>) -> Secret {
        Secret(key)
    }

    fn mac(&self, kind: TokenKind, subject: &str) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(kind.label());
        mac.update(subject.as_bytes());
        mac
    }

    pub fn sign(&self, kind: TokenKind, subject: &str) -> String {
        let tag = self.mac(kind, subject).finalize().into_bytes();
        format!("{}.{}", B64.encode(subject), B64.encode(tag))
    }

    /// The subject (lead id) a genuine token names.
    pub fn verify(&self, kind: TokenKind, token: &str) -> Result<String, TokenError> {
        let (subject, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let subject = B64.decode(subject).map_err(|_| TokenError::Malformed)?;
        let subject = String::from_utf8(subject).map_err(|_| TokenError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
        // Constant-time comparison.
        self.mac(kind, &subject)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_any_change_is_refused() {
        let s = Secret::new(b"server secret".to_vec());
        let t = s.sign(TokenKind::Unsubscribe, "lead-7");
        assert_eq!(s.verify(TokenKind::Unsubscribe, &t), Ok("lead-7".into()));

        // Another lead's name with this signature.
        let (_, tag) = t.split_once('.').unwrap();
        let forged = format!("{}.{tag}", B64.encode("lead-8"));
        assert_eq!(
            s.verify(TokenKind::Unsubscribe, &forged),
            Err(TokenError::BadSignature)
        );
        // A flipped character in the signature.
        let mut bytes = t.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        assert!(s.verify(TokenKind::Unsubscribe, &altered).is_err());
        // Another secret.
        let other = Secret::new(b"other".to_vec());
        assert_eq!(
            other.verify(TokenKind::Unsubscribe, &t),
            Err(TokenError::BadSignature)
        );
        for junk in ["", ".", "abc", "a.b.c", "%%%.%%%"] {
            assert!(s.verify(TokenKind::Unsubscribe, junk).is_err(), "{junk}");
        }
    }
}
