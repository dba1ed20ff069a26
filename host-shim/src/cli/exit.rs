//! Exit codes, and the hints that follow an error when its cause is a
//! common mistake (no broker running, TLS to a plain port, a retained send
//! to a 3.1.1 broker without retained messages).

use connector::model::{Error as ConnectorError, ErrorCode};
use host_shim::host::OperationError;
use std::process::ExitCode;

/// Some documents failed (send), or an expectation was not met (run).
pub const SOME_FAILED: u8 = 1;
/// A usage or configuration error (also clap's own exit code).
pub const USAGE: u8 = 2;
/// The broker could not be reached, refused the client, or went away.
pub const CONNECTION_FAILED: u8 = 3;
/// `listen -W` ran out of time before `-C` documents came, as
/// `mosquitto_sub -W` exits.
pub const TIMED_OUT: u8 = 27;

/// The connector error in `err`'s chain, if any.
fn connector_error(err: &anyhow::Error) -> Option<&ConnectorError> {
    err.chain().find_map(|cause| {
        cause
            .downcast_ref::<OperationError>()
            .and_then(|e| match e {
                OperationError::Connector(e) => Some(e),
                OperationError::Trap(_) => None,
            })
            .or_else(|| cause.downcast_ref::<ConnectorError>())
    })
}

/// Whether a connector error is about reaching the broker rather than
/// about what was asked of it.
pub fn is_connection_error(error: &ConnectorError) -> bool {
    matches!(
        error.code,
        ErrorCode::ConnectionFailed | ErrorCode::NotAuthorized | ErrorCode::Timeout
    )
}

/// The exit code for an error that ended a command.
pub fn code(err: &anyhow::Error) -> ExitCode {
    match connector_error(err) {
        Some(e) if is_connection_error(e) => ExitCode::from(CONNECTION_FAILED),
        _ => ExitCode::from(USAGE),
    }
}

/// A hint for an error that ended a command, when its cause is a common
/// mistake.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let error = connector_error(err)?;
    let message = error.message.to_lowercase();
    if error.code == ErrorCode::ConnectionFailed && message.contains("refused") {
        return Some(
            "is a broker running there? `host-shim broker` starts one on \
             127.0.0.1:1883",
        );
    }
    if error.code != ErrorCode::ConnectionFailed {
        return None;
    }
    // The host's messages name the cause in terms of the connection file
    // (`tls.ca_file`, ...); the hints give the flags that set the same.
    if message.contains("not signed by") && message.contains("tls.ca_file") {
        return Some(
            "the broker's certificate is not signed by a certificate authority \
             trusted here: give the broker's CA with --cafile FILE",
        );
    }
    if message.contains("requires a client certificate") {
        return Some("the broker wants a client certificate: give --cert FILE --key FILE");
    }
    if message.contains("does not speak tls") {
        return Some(
            "mqtts:// and the TLS flags need a TLS port (8883 by convention); \
             for a plain port use mqtt:// and no --cafile / --cert / --key",
        );
    }
    None
}

/// A hint for a document that failed on a retained send over MQTT 3.1.1:
/// a 3.1.1 broker without retained messages cannot say so and closes the
/// connection (a 5.0 broker says so, and the connector's error does too).
pub fn retained_send_hint(
    error: &ConnectorError,
    retained: bool,
    v311: bool,
) -> Option<&'static str> {
    let lost = error.code == ErrorCode::ConnectionFailed
        || error.message.contains("connection to the broker was lost");
    (retained && v311 && lost).then_some(
        "a 3.1.1 broker without retained messages drops the connection on a \
         retained send: if this broker has none, set \"retain_supported\": \
         false in the --connection file, or send without -r",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_exit_3_with_a_hint() {
        let refused = ConnectorError::new(
            ErrorCode::ConnectionFailed,
            "cannot connect to 127.0.0.1:1: connection refused",
        );
        let err = anyhow::Error::new(OperationError::Connector(refused)).context("opening");
        assert_eq!(code(&err), ExitCode::from(CONNECTION_FAILED));
        assert!(hint(&err).unwrap().contains("host-shim broker"));

        let config = ConnectorError::new(ErrorCode::InvalidConfig, "bad");
        let err = anyhow::Error::new(OperationError::Connector(config));
        assert_eq!(code(&err), ExitCode::from(USAGE));
        assert_eq!(hint(&err), None);
        assert_eq!(code(&anyhow::anyhow!("usage")), ExitCode::from(USAGE));
    }

    #[test]
    fn tls_failures_get_the_hint_of_their_cause() {
        let hint_for = |message: &str| {
            let error = ConnectorError::new(ErrorCode::ConnectionFailed, message);
            hint(&anyhow::Error::new(OperationError::Connector(error)))
        };
        let plain = hint_for(
            "cannot connect to mqtts://h:1883: the broker closed the connection during the \
             TLS handshake: it does not speak TLS on this port; use mqtt:// or the broker's TLS port",
        );
        assert!(plain.unwrap().contains("plain port"));
        let issuer = hint_for(
            "cannot connect to mqtts://h:8883: the broker's certificate is not signed by the \
             CA in tls.ca_file (or, without tls.ca_file, by a CA the system trusts): set \
             tls.ca_file to the CA that signed it",
        );
        assert!(issuer.unwrap().contains("--cafile"));
        let required = hint_for(
            "cannot connect to mqtts://h:8883: the broker requires a client certificate: set \
             tls.client_cert_file and tls.client_key_file",
        );
        assert!(required.unwrap().contains("--cert FILE --key FILE"));
        let plain_reset = hint_for("cannot connect to mqtt://h:1: connection reset by peer");
        assert_eq!(plain_reset, None);
    }

    #[test]
    fn the_help_lists_these_codes() {
        let help = exit_status_help!();
        for code in [SOME_FAILED, USAGE, CONNECTION_FAILED, TIMED_OUT] {
            assert!(help.contains(&format!(" {code} ")), "{code} in {help}");
        }
    }

    #[test]
    fn a_lost_connection_on_a_retained_send_hints_at_retain_supported() {
        let lost = ConnectorError::new(
            ErrorCode::ConnectionFailed,
            "the connection to the broker was lost before the broker acknowledged it",
        );
        assert!(retained_send_hint(&lost, true, true)
            .unwrap()
            .contains("retain_supported"));
        assert_eq!(retained_send_hint(&lost, false, true), None);
        assert_eq!(retained_send_hint(&lost, true, false), None);
    }
}
