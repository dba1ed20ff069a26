//! The value ranges the broker relies on, checked once at start so the core
//! never meets a value it cannot work with.

use super::{BrokerConfig, ConfigError};
use tokio::sync::Semaphore;

/// Checks the values the core and the server rely on.
///
/// # Errors
///
/// [`ConfigError::OutOfRange`] naming the first key out of range.
pub(crate) fn check(config: &BrokerConfig) -> Result<(), ConfigError> {
    let fail = |key, expected: String| Err(ConfigError::OutOfRange { key, expected });
    if config.maximum_qos > 2 {
        return fail(
            "maximum_qos",
            format!("0, 1 or 2, not {}", config.maximum_qos),
        );
    }
    if config.receive_maximum == 0 {
        return fail("receive_maximum", "at least 1".to_owned());
    }
    if config.max_inflight == 0 {
        return fail("max_inflight", "at least 1".to_owned());
    }
    if config.max_packet_size == 0 {
        return fail("max_packet_size", "at least 1".to_owned());
    }
    if config.max_outbound_bytes == 0 {
        return fail("max_outbound_bytes", "at least 1".to_owned());
    }
    if config.slow_client_timeout == 0 {
        return fail("slow_client_timeout", "at least 1".to_owned());
    }
    // The accept loop holds one semaphore permit per connection.
    if config.max_connections == 0 || config.max_connections > Semaphore::MAX_PERMITS {
        return fail(
            "max_connections",
            format!(
                "between 1 and {}, not {}",
                Semaphore::MAX_PERMITS,
                config.max_connections
            ),
        );
    }
    if let Some(tls) = &config.tls {
        if tls.require_certificate && tls.ca_file.is_none() {
            return fail(
                "tls.require_certificate",
                "false without tls.ca_file, the CA that client certificates are checked against"
                    .to_owned(),
            );
        }
        if tls.use_identity_as_username && !tls.require_certificate {
            return fail(
                "tls.use_identity_as_username",
                "false unless tls.require_certificate is true".to_owned(),
            );
        }
    }
    let faults = &config.faults;
    if !(0.0..=1.0).contains(&faults.drop_acks) {
        return fail(
            "faults.drop_acks",
            format!("between 0 and 1, not {}", faults.drop_acks),
        );
    }
    for (key, value) in [
        ("faults.close_after_packets", faults.close_after_packets),
        ("faults.close_every_ms", faults.close_every_ms),
        ("faults.restart_every_ms", faults.restart_every_ms),
    ] {
        if value == Some(0) {
            return fail(key, "at least 1 (leave it out for none)".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_key_and_the_range() {
        let config = BrokerConfig {
            maximum_qos: 3,
            ..BrokerConfig::default()
        };
        assert_eq!(
            check(&config).unwrap_err().to_string(),
            "maximum_qos must be 0, 1 or 2, not 3"
        );
        let config = BrokerConfig {
            max_inflight: 0,
            ..BrokerConfig::default()
        };
        assert_eq!(
            check(&config).unwrap_err().to_string(),
            "max_inflight must be at least 1"
        );
        assert!(check(&BrokerConfig::default()).is_ok());
    }

    #[test]
    fn faults_out_of_range_name_their_key() {
        let mut config = BrokerConfig::default();
        config.faults.drop_acks = 1.5;
        assert_eq!(
            check(&config).unwrap_err().to_string(),
            "faults.drop_acks must be between 0 and 1, not 1.5"
        );
        config.faults.drop_acks = f64::NAN;
        assert!(check(&config).is_err());
        config.faults.drop_acks = 1.0;
        config.faults.restart_every_ms = Some(0);
        assert_eq!(
            check(&config).unwrap_err().to_string(),
            "faults.restart_every_ms must be at least 1 (leave it out for none)"
        );
        config.faults.restart_every_ms = Some(1);
        config.faults.close_after_packets = Some(0);
        assert!(check(&config)
            .unwrap_err()
            .to_string()
            .starts_with("faults.close_after_packets"));
    }

    #[test]
    fn tls_options_that_need_another() {
        let tls = crate::TlsConfig {
            port: 0,
            cert_file: "server.pem".into(),
            key_file: "server.key".into(),
            ca_file: None,
            require_certificate: true,
            use_identity_as_username: false,
        };
        let config = BrokerConfig {
            tls: Some(tls.clone()),
            ..BrokerConfig::default()
        };
        let err = check(&config).unwrap_err().to_string();
        assert!(
            err.starts_with("tls.require_certificate must be false without tls.ca_file"),
            "{err}"
        );
        let config = BrokerConfig {
            tls: Some(crate::TlsConfig {
                ca_file: Some("ca.pem".into()),
                require_certificate: false,
                use_identity_as_username: true,
                ..tls
            }),
            ..BrokerConfig::default()
        };
        let err = check(&config).unwrap_err().to_string();
        assert_eq!(
            err,
            "tls.use_identity_as_username must be false unless tls.require_certificate is true"
        );
    }
}
