//! The rustls client configuration for `mqtts://` brokers, and what a TLS
//! failure means for the user.
//!
//! Built here rather than by rumqttc so that the CA file may hold several
//! certificates, the system's roots are the default, and errors name the
//! file at fault. The ring provider is used explicitly, so no process-wide
//! default provider has to be installed.

use std::fs::File;
use std::io::{self, BufReader};
use std::sync::Arc;

use connector::model::{Error, ErrorCode, TlsOptions};
use rumqttc::TlsError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

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

/// A failed TLS handshake in words that say what is wrong and what to do;
/// `None` when the cause is not one of those known here.
pub(crate) fn explain_handshake(error: &TlsError) -> Option<String> {
    match error {
        TlsError::TLS(e) => explain_rustls(e),
        TlsError::Io(io) => match io.kind() {
            // The broker hung up on the ClientHello: a plain MQTT listener
            // reads it as a malformed packet and closes.
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => Some(NOT_TLS.into()),
            _ => explain_io(io),
        },
        _ => None,
    }
}

/// The same for an I/O error of an established TLS connection (with TLS
/// 1.3, the broker refuses a client certificate only after the client's
/// side of the handshake is over).
pub(crate) fn explain_io(error: &io::Error) -> Option<String> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(explain_rustls)
}

const NOT_TLS: &str = "the broker closed the connection during the TLS handshake: \
    it does not speak TLS on this port; use mqtt:// or the broker's TLS port";

fn explain_rustls(error: &rustls::Error) -> Option<String> {
    use rustls::Error as E;
    use CertificateError as C;
    let text = match error {
        E::InvalidCertificate(C::UnknownIssuer) => "the broker's certificate is not signed by \
            the CA in tls.ca_file (or, without tls.ca_file, by a CA the system trusts): \
            set tls.ca_file to the CA that signed it"
            .to_owned(),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the broker's certificate has expired: the broker needs a renewed certificate \
            (or this machine's clock is wrong)"
                .to_owned()
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the broker's certificate is not valid yet: check this machine's clock".to_owned()
        }
        E::InvalidCertificate(C::NotValidForName) => "the broker's certificate is for another \
            host name: connect with a host name the certificate names, or give the broker a \
            certificate for this one"
            .to_owned(),
        E::InvalidCertificate(C::NotValidForNameContext { expected, .. }) => format!(
            "the broker's certificate is for another host name, not {}: connect with a host \
            name the certificate names, or give the broker a certificate for this one",
            expected.to_str()
        ),
        E::InvalidCertificate(other) => {
            format!("the broker's certificate is not valid ({other:?}): check tls.ca_file and the broker's certificate")
        }
        E::AlertReceived(AlertDescription::CertificateRequired) => "the broker requires a \
            client certificate: set tls.client_cert_file and tls.client_key_file"
            .to_owned(),
        E::AlertReceived(AlertDescription::UnknownCA | AlertDescription::BadCertificate) => {
            "the broker refused the client certificate (tls.client_cert_file): it is not \
            signed by a CA the broker trusts"
                .to_owned()
        }
        E::AlertReceived(AlertDescription::CertificateExpired) => "the broker refused the \
            client certificate (tls.client_cert_file): it has expired"
            .to_owned(),
        E::InvalidMessage(_) => NOT_TLS.to_owned(),
        _ => return None,
    };
    Some(text)
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
    fn tls_failures_say_what_to_do() {
        let eof = TlsError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "tls handshake eof",
        ));
        let text = explain_handshake(&eof).unwrap();
        assert!(text.contains("does not speak TLS"), "{text}");

        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let text = explain_handshake(&TlsError::TLS(unknown.clone())).unwrap();
        assert!(text.contains("set tls.ca_file"), "{text}");
        // The same error inside an I/O error, as tokio-rustls reports it.
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, unknown);
        assert_eq!(explain_io(&wrapped), Some(text));

        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        let text = explain_io(&io::Error::new(io::ErrorKind::InvalidData, alert)).unwrap();
        assert!(text.contains("tls.client_cert_file"), "{text}");

        // An end of stream after the handshake is not a TLS failure.
        assert_eq!(explain_io(&io::ErrorKind::UnexpectedEof.into()), None);
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
