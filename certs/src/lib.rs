//! `duet-certs`: the relay's TLS identity.
//!
//! Browsers trust a self-signed certificate through WebTransport's
//! `serverCertificateHashes` only if it is ECDSA (P-256) and valid for at most two weeks,
//! so a development relay makes a fresh one at start, publishes its SHA-256 fingerprint
//! (`/certificate.sha256`), and replaces it well before it expires. A real deployment loads
//! a CA-signed certificate from PEM files instead and needs no fingerprint.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, SystemTime};
use wtransport::tls::{Certificate, CertificateChain, PrivateKey};
use wtransport::Identity;

/// How long a development certificate is valid. Chromium refuses hashes of certificates
/// valid for longer than 14 days; 13 days leaves a day of margin for clock skew.
pub const DEV_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);

/// How far back `not_before` is set, so that a client whose clock runs a little behind
/// still accepts a certificate made a moment ago. It counts against the 14 days.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate time out of range")]
    Time,
    #[error("could not load {path}: {reason}")]
    Load { path: String, reason: String },
}

/// A self-signed development certificate and what the relay tells browsers about it.
pub struct DevCertificate {
    identity: Identity,
    fingerprint: [u8; 32],
    not_before: SystemTime,
    not_after: SystemTime,
}

impl DevCertificate {
    /// Makes a certificate for `names` (DNS names or IP addresses), valid from a little
    /// before `now` for `validity` in all.
    pub fn generate(
        names: &[String],
        now: SystemTime,
        validity: Duration,
    ) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Duet development relay");
        params.distinguished_name = dn;
        let backdate = BACKDATE.min(validity / 4);
        let not_before = now.checked_sub(backdate).ok_or(CertError::Time)?;
        let not_after = not_before.checked_add(validity).ok_or(CertError::Time)?;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.self_signed(&key)?;
        let der = cert.der().to_vec();
        let fingerprint: [u8; 32] = Sha256::digest(&der).into();
        let certificate = Certificate::from_der(der).map_err(|e| CertError::Load {
            path: "generated".into(),
            reason: e.to_string(),
        })?;
        let identity = Identity::new(
            CertificateChain::single(certificate),
            PrivateKey::from_der_pkcs8(key.serialize_der()),
        );
        Ok(Self {
            identity,
            fingerprint,
            not_before,
            not_after,
        })
    }

    /// The names a local relay answers to.
    pub fn local_names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    }

    pub fn identity(&self) -> Identity {
        self.identity.clone_identity()
    }

    pub fn der(&self) -> &[u8] {
        self.identity
            .certificate_chain()
            .as_slice()
            .first()
            .map(|c| c.der())
            .unwrap_or_default()
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Lowercase hex, as `/certificate.sha256` serves it.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When to replace this certificate: after two thirds of its life, so that a page that
    /// fetched the fingerprint just before has days, not minutes, to use it.
    pub fn rotate_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }
}

/// Parses a fingerprint given as hex (with or without `:` separators).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let clean: String = text.trim().chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(clean).ok()?;
    bytes.try_into().ok()
}

/// Loads a real certificate chain and key from PEM files.
pub async fn load_pem(cert: &Path, key: &Path) -> Result<Identity, CertError> {
    Identity::load_pemfiles(cert, key)
        .await
        .map_err(|e| CertError::Load {
            path: format!("{} / {}", cert.display(), key.display()),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn dev_certificate_is_what_browsers_accept() {
        let now = SystemTime::now();
        let cert = DevCertificate::generate(&DevCertificate::local_names(), now, DEV_VALIDITY)
            .expect("generate");
        let (_, x509) = X509Certificate::from_der(cert.der()).expect("parses as X.509");
        let validity = x509.validity();
        let span = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert!(span > 0 && span < 14 * 24 * 3600, "validity {span} s");
        let now_s = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs() as i64;
        assert!(validity.not_before.timestamp() <= now_s && now_s < validity.not_after.timestamp());
        // ECDSA with P-256.
        let spki = x509.public_key();
        assert_eq!(
            spki.algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1",
            "id-ecPublicKey"
        );
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        assert_eq!(curve.as_deref(), Some("1.2.840.10045.3.1.7"), "prime256v1");
        // The fingerprint is SHA-256 over the DER, and matches what wtransport computes.
        let expected: [u8; 32] = Sha256::digest(cert.der()).into();
        assert_eq!(cert.fingerprint(), expected);
        let wt = cert.identity().certificate_chain().as_slice()[0].hash();
        assert_eq!(wt.as_ref(), &cert.fingerprint());
        assert_eq!(parse_fingerprint(&cert.fingerprint_hex()), Some(expected));
        // Rotation comes before expiry, after most of the life.
        assert!(cert.rotate_at() < cert.not_after());
        assert!(cert.rotate_at() > now + Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn each_certificate_is_new() {
        let a = DevCertificate::generate(&["localhost".into()], SystemTime::now(), DEV_VALIDITY)
            .expect("a");
        let b = DevCertificate::generate(&["localhost".into()], SystemTime::now(), DEV_VALIDITY)
            .expect("b");
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[tokio::test]
    async fn missing_pem_files_are_a_clear_error() {
        let err = load_pem(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .await
        .expect_err("fails");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
