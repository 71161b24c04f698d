//! Redaction: a found secret is never shown, logged or stored whole. What is kept — a few leading and trailing
//! characters and a fingerprint (a truncated SHA-256) — lets a person recognise the same secret across runs.

use sha2::{Digest, Sha256};

/// The redacted form of `secret`: `AKIA…[REDACTED]…3F` for long values, less for short ones.
pub fn redact(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    match chars.len() {
        0..=7 => "[REDACTED]".to_string(),
        8..=15 => format!("{}…[REDACTED]", chars[..2].iter().collect::<String>()),
        n => format!(
            "{}…[REDACTED]…{}",
            chars[..4].iter().collect::<String>(),
            chars[n - 2..].iter().collect::<String>()
        ),
    }
}

/// A stable fingerprint of `secret` (12 hex digits of SHA-256 over a ccfan-specific prefix).
pub fn fingerprint(secret: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"ccfan-secret-fingerprint:");
    hasher.update(secret);
    let digest = hasher.finalize();
    digest
        .iter()
        .take(6)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_little_of_a_secret() {
        assert_eq!(redact("AKIAABCDEFGHIJKLMN3F"), "AKIA…[REDACTED]…3F");
        assert_eq!(redact("hunter22x"), "hu…[REDACTED]");
        assert_eq!(redact("pw"), "[REDACTED]");
        assert!(!redact("AKIAABCDEFGHIJKLMN3F").contains("ABCDEFGH"));
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(fingerprint(b"a"), fingerprint(b"a"));
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b"a").len(), 12);
    }
}
