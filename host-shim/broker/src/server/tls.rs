//! The TLS listener's side of a connection: the server configuration built
//! from the `tls` key's files, the handshake with its deadline, and the
//! user name a client certificate gives (`use_identity_as_username`).

use crate::config::TlsConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a new TLS connection may take to finish its handshake, so a
/// client that never does cannot hold a connection slot. The CONNECT
/// deadline starts after it.
pub(super) const HANDSHAKE_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(500)
} else {
    Duration::from_secs(10)
};

/// Why the TLS listener cannot be set up from the `tls` key. Each message
/// names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file cannot be opened or read.
    #[error("cannot read tls.{key} {}: {error}", path.display())]
    Unreadable {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// A file holds no PEM certificate.
    #[error("tls.{key} {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error(
        "tls.key_file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate or key is not usable, or they do not fit together.
    #[error("tls.{key} {}: {detail}", path.display())]
    Invalid {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What rustls found wrong.
        detail: String,
    },
}

/// The TLS listener's handshake, and what it makes of client certificates.
#[derive(Clone)]
pub(super) struct TlsListener {
    acceptor: TlsAcceptor,
    use_identity_as_username: bool,
}

/// Why a TLS connection was not established.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    #[error("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Failed(io::Error),
    #[error("the client certificate has no Common Name to use as user name")]
    NoIdentity,
}

impl TlsListener {
    /// Reads the files `config` names and builds the server side of TLS.
    ///
    /// # Errors
    ///
    /// [`TlsSetupError`] naming the key and file at fault.
    pub(super) fn new(config: &TlsConfig) -> Result<TlsListener, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("cert_file", &config.cert_file, e))?;
        let builder = match &config.ca_file {
            Some(ca_file) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs("ca_file", ca_file)? {
                    roots
                        .add(cert)
                        .map_err(|e| invalid("ca_file", ca_file, e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if config.require_certificate {
                    verifier.build()
                } else {
                    verifier.allow_unauthenticated().build()
                }
                .map_err(|e| invalid("ca_file", ca_file, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let chain = read_certs("cert_file", &config.cert_file)?;
        let key = read_key(&config.key_file)?;
        let server = builder
            .with_single_cert(chain, key)
            .map_err(|e| invalid("key_file", &config.key_file, e))?;
        Ok(TlsListener {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            use_identity_as_username: config.use_identity_as_username,
        })
    }

    /// The TLS handshake on a new connection, within [`HANDSHAKE_TIMEOUT`],
    /// and the user name its certificate gives when
    /// `use_identity_as_username` is on.
    pub(super) async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, Option<String>), HandshakeError> {
        let stream = timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream))
            .await
            .map_err(|_| HandshakeError::Timeout)?
            .map_err(HandshakeError::Failed)?;
        if !self.use_identity_as_username {
            return Ok((stream, None));
        }
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(common_name)
            .ok_or(HandshakeError::NoIdentity)?;
        Ok((stream, Some(identity)))
    }
}

/// The first Common Name of the certificate's subject, if it has one in
/// a string type.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let name = cert.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

fn invalid(key: &'static str, path: &Path, error: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError::Invalid {
        key,
        path: path.to_owned(),
        detail: error.to_string(),
    }
}

fn open(key: &'static str, path: &Path) -> Result<BufReader<File>, TlsSetupError> {
    let unreadable = |error| TlsSetupError::Unreadable {
        key,
        path: path.to_owned(),
        error,
    };
    File::open(path).map(BufReader::new).map_err(unreadable)
}

fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = rustls_pemfile::certs(&mut open(key, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsSetupError::Unreadable {
            key,
            path: path.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    rustls_pemfile::private_key(&mut open("key_file", path)?)
        .map_err(|error| TlsSetupError::Unreadable {
            key: "key_file",
            path: path.to_owned(),
            error,
        })?
        .ok_or_else(|| TlsSetupError::NoKey {
            path: path.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tests::read_to_end;
    use crate::server::{start, StartError};
    use crate::BrokerConfig;
    use e2e::{Pki, RawConnect};
    use tokio::io::AsyncWriteExt;
    use tokio::time::Instant;

    fn config_with(tls: TlsConfig) -> BrokerConfig {
        BrokerConfig {
            tls: Some(tls),
            ..BrokerConfig::ephemeral()
        }
    }

    fn tls_config(pki: &Pki) -> TlsConfig {
        let server = pki.server().unwrap();
        TlsConfig {
            port: 0,
            cert_file: server.cert_file,
            key_file: server.key_file,
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        }
    }

    #[tokio::test]
    async fn the_handle_gives_the_tls_url() {
        let pki = Pki::new("test CA").unwrap();
        let broker = start(config_with(tls_config(&pki))).await.unwrap();
        let addr = broker.tls_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_ne!(addr.port(), broker.local_addr().port());
        assert_eq!(broker.tls_url().unwrap(), format!("mqtts://{addr}"));
        broker.shutdown().await;

        let plain = start(BrokerConfig::ephemeral()).await.unwrap();
        assert_eq!(plain.tls_url(), None);
        plain.shutdown().await;
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_the_handshake_is_closed() {
        let pki = Pki::new("test CA").unwrap();
        let broker = start(config_with(tls_config(&pki))).await.unwrap();
        let mut silent = TcpStream::connect(broker.tls_addr().unwrap())
            .await
            .unwrap();
        let started = Instant::now();
        assert_eq!(read_to_end(&mut silent).await, b"");
        assert!(started.elapsed() >= HANDSHAKE_TIMEOUT);

        // Plain MQTT on the TLS port is no handshake: closed, no CONNACK.
        let mut plain = TcpStream::connect(broker.tls_addr().unwrap())
            .await
            .unwrap();
        plain
            .write_all(&RawConnect::v4("plain").encode())
            .await
            .unwrap();
        let answer = read_to_end(&mut plain).await;
        assert_ne!(answer.first(), Some(&0x20), "{answer:?}");
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn unusable_files_are_start_errors_naming_the_file() {
        let pki = Pki::new("test CA").unwrap();
        let good = tls_config(&pki);
        let not_pem = good.cert_file.with_extension("txt");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let missing = PathBuf::from("/nonexistent/tls/server.pem");
        let cases = [
            (
                TlsConfig {
                    cert_file: missing.clone(),
                    ..good.clone()
                },
                "cannot read tls.cert_file /nonexistent/tls/server.pem",
            ),
            (
                TlsConfig {
                    cert_file: not_pem.clone(),
                    ..good.clone()
                },
                "holds no PEM certificate",
            ),
            (
                TlsConfig {
                    key_file: not_pem.clone(),
                    ..good.clone()
                },
                "holds no PEM private key",
            ),
            (
                TlsConfig {
                    key_file: pki.client("other").unwrap().key_file,
                    ..good.clone()
                },
                "tls.key_file",
            ),
            (
                TlsConfig {
                    ca_file: Some(missing.clone()),
                    ..good.clone()
                },
                "cannot read tls.ca_file",
            ),
        ];
        for (tls, want) in cases {
            let path = if want == "tls.key_file" || want.contains("private key") {
                tls.key_file.clone()
            } else {
                tls.ca_file.clone().unwrap_or(tls.cert_file.clone())
            };
            match start(config_with(tls)).await {
                Err(err @ StartError::Tls(_)) => {
                    let text = err.to_string();
                    assert!(text.contains(want), "{text}");
                    assert!(text.contains(&*path.to_string_lossy()), "{text}");
                }
                other => panic!("{want}: expected a TLS error, got {other:?}"),
            }
        }

        let no_ca = TlsConfig {
            require_certificate: true,
            ..good.clone()
        };
        match start(config_with(no_ca)).await {
            Err(StartError::Config(msg)) => {
                assert!(msg.contains("tls.require_certificate"), "{msg}")
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        let no_require = TlsConfig {
            ca_file: Some(pki.ca_file().to_owned()),
            use_identity_as_username: true,
            ..good
        };
        match start(config_with(no_require)).await {
            Err(StartError::Config(msg)) => {
                assert!(msg.contains("tls.use_identity_as_username"), "{msg}")
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}
