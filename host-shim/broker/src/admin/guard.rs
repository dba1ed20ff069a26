//! Who may use the admin endpoint. Listening on loopback keeps other
//! machines out, but not two things on this one:
//!
//! - A web page: through DNS rebinding, its own host name comes to resolve
//!   to 127.0.0.1, and the browser then sends it requests that carry that
//!   name in `Host`. So a `Host` that is not a loopback name is refused.
//! - Another local user or process: only a secret stops it, so when a
//!   token is set every request must carry it as `Authorization: Bearer
//!   TOKEN`, compared in constant time.

use super::Refusal;
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use std::fmt;
use std::net::IpAddr;
use subtle::ConstantTimeEq as _;
use thiserror::Error;

/// The longest token taken: it must fit in a request head with room to
/// spare.
const MAX_TOKEN: usize = 1024;

/// A token that cannot be the admin endpoint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the admin token must be 1 to {MAX_TOKEN} visible ASCII characters, without spaces")]
pub struct InvalidToken;

/// Checks that `token` can be the admin endpoint's token: 1 to 1024
/// visible ASCII characters, so that it can travel in an `Authorization`
/// header.
///
/// # Errors
///
/// [`InvalidToken`] when it cannot.
pub fn check_token(token: &str) -> Result<(), InvalidToken> {
    let visible = token.bytes().all(|b| b.is_ascii_graphic());
    if token.is_empty() || token.len() > MAX_TOKEN || !visible {
        return Err(InvalidToken);
    }
    Ok(())
}

/// The token every request must carry, when one is set.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

impl Token {
    /// The token `text`, if it can be one ([`check_token`]).
    pub fn new(text: &str) -> Result<Token, InvalidToken> {
        check_token(text)?;
        Ok(Token(text.as_bytes().to_vec()))
    }

    /// Whether `given` is the token. The time taken depends on the token's
    /// length only: not on how much of `given` matches, nor on its length.
    fn matches(&self, given: &[u8]) -> bool {
        let mut same = u8::from(self.0.len() == given.len()).ct_eq(&1);
        for (i, byte) in self.0.iter().enumerate() {
            same &= byte.ct_eq(given.get(i).unwrap_or(&0));
        }
        same.into()
    }
}

/// Refuses a request whose `Host` is not a loopback name: `localhost`,
/// `127.0.0.1`, `[::1]`, or the address the endpoint listens on, each with
/// any port or none (an SSH tunnel may forward another port). A request
/// without `Host` passes: browsers always send one.
pub(super) fn check_host(headers: &HeaderMap, listening: IpAddr) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        return Ok(());
    };
    if hosts.next().is_some() {
        return Err(Refusal::bad_request("more than one Host header"));
    }
    let host = String::from_utf8_lossy(host.as_bytes());
    if is_loopback_name(&host, listening) {
        return Ok(());
    }
    Err(Refusal::new(
        StatusCode::FORBIDDEN,
        format!(
            "the Host header {host:?} is not a loopback name: the admin endpoint \
             answers requests for localhost, 127.0.0.1 and [::1] only"
        ),
    ))
}

/// Whether `host` (`NAME` or `NAME:PORT`) names this machine's loopback.
fn is_loopback_name(host: &str, listening: IpAddr) -> bool {
    // The port is whatever follows the last `:` after any `]`.
    let bracket_end = host.rfind(']').map_or(0, |i| i + 1);
    let name = match host[bracket_end..].rfind(':') {
        Some(colon) => {
            let (name, port) = host.split_at(bracket_end + colon);
            if port[1..].parse::<u16>().is_err() {
                return false;
            }
            name
        }
        None => host,
    };
    let listening = match listening {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    ["localhost", "127.0.0.1", "[::1]", &listening]
        .iter()
        .any(|loopback| name.eq_ignore_ascii_case(loopback))
}

/// Refuses a request without `Authorization: Bearer TOKEN`, with 401 and
/// the `WWW-Authenticate` challenge.
pub(super) fn check_authorization(headers: &HeaderMap, token: &Token) -> Result<(), Refusal> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer(value.as_bytes()));
    match given {
        Some(given) if token.matches(given) => Ok(()),
        Some(_) => Err(
            Refusal::new(StatusCode::UNAUTHORIZED, "the admin token is wrong")
                .with_header(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""),
        ),
        None => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "the admin endpoint needs a token: send `Authorization: Bearer TOKEN` \
             (host-shim retained --admin-token, or HOST_SHIM_ADMIN_TOKEN)",
        )
        .with_header(header::WWW_AUTHENTICATE, "Bearer")),
    }
}

/// The token of `Bearer TOKEN` (the scheme in any case), if that is what
/// `value` is.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn loopback_names() {
        for host in [
            "localhost",
            "LocalHost:18830",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:65535",
        ] {
            assert!(is_loopback_name(host, V4), "{host}");
        }
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert!(is_loopback_name("127.0.0.2:9", other));
        assert!(is_loopback_name("[::1]:9", IpAddr::V6(Ipv6Addr::LOCALHOST)));
        for host in [
            "",
            "evil.example",
            "evil.example:18830",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "127.0.0.2",
            "localhost:",
            "localhost:x",
            "localhost:99999",
            "::1",
            "[::1]x",
            "[::2]:1",
        ] {
            assert!(!is_loopback_name(host, V4), "{host}");
        }
    }

    #[test]
    fn tokens() {
        let token = Token::new("s3cret").unwrap();
        assert!(token.matches(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"x3cret", b"\0"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "Token(<hidden>)");
        for bad in ["", "a b", "tab\t", "é", &"x".repeat(MAX_TOKEN + 1)] {
            assert_eq!(Token::new(bad), Err(InvalidToken), "{bad:?}");
            assert_eq!(check_token(bad), Err(InvalidToken), "{bad:?}");
        }
        assert!(Token::new(&"x".repeat(MAX_TOKEN)).is_ok());
        let message = InvalidToken.to_string();
        assert!(message.contains("1 to 1024 visible ASCII"), "{message}");
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Basic YTpi"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
