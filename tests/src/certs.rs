//! Certificates made for one test with `rcgen`, written to a private
//! temporary directory that is removed with the [`Pki`]: a CA, server
//! certificates (for 127.0.0.1 and localhost, for another host, expired)
//! and client certificates. None is checked in.

use anyhow::{Context, Result};
use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A test CA and the directory its certificates are written to. Dropping
/// it removes the directory.
pub struct Pki {
    dir: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
    ca_file: PathBuf,
}

/// A certificate and its key, as files and as DER.
pub struct Issued {
    /// The PEM certificate.
    pub cert_file: PathBuf,
    /// The PEM private key (PKCS#8).
    pub key_file: PathBuf,
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Issued {
    /// The private key, as rustls takes it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// What a leaf certificate is for.
enum Usage {
    Server,
    Client,
}

impl Pki {
    /// A new CA whose Common Name is `name`, in a new directory.
    pub fn new(name: &str) -> Result<Pki> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mqtt-test-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca = params.self_signed(&ca_key)?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem())?;
        Ok(Pki {
            dir,
            ca,
            ca_key,
            ca_file,
        })
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA certificate.
    pub fn ca_cert(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> Result<Issued> {
        self.issue("server", &["127.0.0.1", "localhost"], Usage::Server, false)
    }

    /// A server certificate for another host only (`other.example`).
    pub fn wrong_host_server(&self) -> Result<Issued> {
        self.issue("other-host", &["other.example"], Usage::Server, false)
    }

    /// A server certificate for 127.0.0.1 and localhost that expired in
    /// 2001.
    pub fn expired_server(&self) -> Result<Issued> {
        self.issue("expired", &["127.0.0.1", "localhost"], Usage::Server, true)
    }

    /// A client certificate whose Common Name is `name`.
    pub fn client(&self, name: &str) -> Result<Issued> {
        self.issue(name, &[], Usage::Client, false)
    }

    fn issue(&self, name: &str, hosts: &[&str], usage: Usage, expired: bool) -> Result<Issued> {
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(hosts)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca, &self.ca_key)?;
        let file = name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let cert_file = self.dir.join(format!("{file}.pem"));
        let key_file = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_file, cert.pem())?;
        std::fs::write(&key_file, key.serialize_pem())?;
        Ok(Issued {
            cert_file,
            key_file,
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// A rustls client configuration that trusts this CA, and presents
    /// `client`'s certificate when given.
    pub fn client_config(&self, client: Option<&Issued>) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_cert())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match client {
            Some(client) => {
                builder.with_client_auth_cert(vec![client.cert.clone()], client.private_key())?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
