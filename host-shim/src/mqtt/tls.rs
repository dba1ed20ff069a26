//! The rustls client configuration for `mqtts://` brokers.
//!
//! Built here rather than by rumqttc so that the CA file may hold several
//! certificates, the system's roots are the default, and errors name the
//! file at fault. The ring provider is used explicitly, so no process-wide
//! default provider has to be installed.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use connector::model::{Error, ErrorCode, TlsOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

fn config_error(message: String) -> Error {
    Error::new(ErrorCode::InvalidConfig, message)
}

fn read_certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let file =
        File::open(path).map_err(|e| config_error(format!("cannot open {what} '{path}': {e}")))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(format!("cannot read {what} '{path}': {e}")))?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "{what} '{path}' holds no PEM certificate"
        )));
    }
    Ok(certs)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, Error> {
    let file = File::open(path)
        .map_err(|e| config_error(format!("cannot open client key '{path}': {e}")))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| config_error(format!("cannot read client key '{path}': {e}")))?
        .ok_or_else(|| config_error(format!("client key '{path}' holds no PEM private key")))
}

fn roots(options: &TlsOptions) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    match &options.ca_file {
        Some(path) => {
            for cert in read_certs(path, "CA file")? {
                roots.add(cert).map_err(|e| {
                    config_error(format!("bad certificate in CA file '{path}': {e}"))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "could not load some system root certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system root certificates");
            if roots.is_empty() {
                return Err(config_error(
                    "no system root certificates found; set tls.ca_file".into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// Builds the rustls configuration `options` describe.
pub(crate) fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorCode::Internal, format!("tls setup: {e}")))?
        .with_root_certificates(roots(options)?);
    let mut config = match (&options.client_cert_file, &options.client_key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert, "client certificate")?, read_key(key)?)
            .map_err(|e| config_error(format!("client certificate and key do not fit: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(config_error(
                "tls.client_cert_file and tls.client_key_file go together".into(),
            ))
        }
    };
    config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_config_errors() {
        let options = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = client_config(&options).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains("/nonexistent/ca.pem"), "{e}");

        let options = TlsOptions {
            client_cert_file: Some("c.pem".into()),
            ..TlsOptions::default()
        };
        assert_eq!(
            client_config(&options).unwrap_err().code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("mqtt-tls-empty-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let options = TlsOptions {
            ca_file: Some(path.to_string_lossy().into_owned()),
            ..TlsOptions::default()
        };
        let e = client_config(&options).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(e.message.contains("no PEM certificate"), "{e}");
    }
}
