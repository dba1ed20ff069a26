//! Broker URLs: `mqtt://host[:port]` (plain TCP) and `mqtts://host[:port]`
//! (TLS), with `tcp://` and `ssl://` as aliases, the spellings of Paho and
//! other clients. The one parser of the workspace: configurations are
//! checked with it, and the host connects where it says.

use std::borrow::Cow;
use std::fmt;

/// Default port of `mqtt://` URLs.
pub const DEFAULT_PORT: u16 = 1883;
/// Default port of `mqtts://` URLs.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// Shown with the errors that say what a broker URL looks like.
const EXAMPLE: &str = "for example mqtt://localhost:1883 or mqtts://broker.example.com";

/// Why a string is not a broker URL. The messages are lowercase, without a
/// final period, and say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// No `scheme://`.
    NoScheme,
    /// A scheme other than `mqtt`, `mqtts`, `tcp` or `ssl`.
    UnsupportedScheme(String),
    /// `user:password@` in the URL.
    Credentials,
    /// A path, query or fragment after the host and port.
    Path,
    /// `[` without its `]`.
    UnclosedIpv6,
    /// Something other than `:port` after `]`.
    AfterIpv6,
    /// Brackets around something that is not an IPv6 address.
    NotIpv6(String),
    /// An IPv6 address without brackets.
    Ipv6WithoutBrackets,
    /// Nothing between `://` and the port.
    NoHost,
    /// A character no host name has.
    HostCharacter {
        /// The host as written.
        host: String,
        /// The first character not allowed.
        character: char,
    },
    /// A port that is not a number from 1 to 65535.
    Port(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::NoScheme => {
                write!(f, "a broker URL starts with mqtt:// or mqtts://, {EXAMPLE}")
            }
            UrlError::UnsupportedScheme(scheme) => write!(
                f,
                "unsupported scheme \"{scheme}\": use mqtt:// (plain) or mqtts:// (TLS)"
            ),
            UrlError::Credentials => {
                f.write_str("put credentials in username and password, not in the URL")
            }
            UrlError::Path => write!(
                f,
                "a broker URL has only a host and a port, no path, query or fragment, {EXAMPLE}"
            ),
            UrlError::UnclosedIpv6 => f.write_str("an IPv6 address must end with ']'"),
            UrlError::AfterIpv6 => f.write_str("only ':port' may follow an IPv6 address"),
            UrlError::NotIpv6(host) => write!(f, "\"{host}\" is not an IPv6 address"),
            UrlError::Ipv6WithoutBrackets => {
                f.write_str("an IPv6 address must be written in brackets, as in mqtt://[::1]:1883")
            }
            UrlError::NoHost => write!(f, "the URL has no host, {EXAMPLE}"),
            UrlError::HostCharacter { host, character } => write!(
                f,
                "the host \"{host}\" contains {character:?}, which is not allowed in a host name"
            ),
            UrlError::Port(text) => write!(
                f,
                "the port must be a number from 1 to 65535, got \"{text}\""
            ),
        }
    }
}

impl std::error::Error for UrlError {}

/// A broker address split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Whether the scheme is `mqtts` (or `ssl`).
    pub tls: bool,
    /// Host name or IP address, without brackets.
    pub host: String,
    /// Port, the scheme's default when the URL has none.
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (the scheme in
    /// any case; `tcp` and `ssl` are taken for `mqtt` and `mqtts`). A single
    /// trailing `/` is allowed; credentials, paths and queries are not.
    ///
    /// ```
    /// use connector::url::BrokerUrl;
    /// let url = BrokerUrl::parse("ssl://[::1]").unwrap();
    /// assert_eq!((url.tls, url.host.as_str(), url.port), (true, "::1", 8883));
    /// assert_eq!(url.to_string(), "mqtts://[::1]:8883");
    /// assert!(BrokerUrl::parse("ws://localhost").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// What is wrong, as a [`UrlError`].
    pub fn parse(url: &str) -> Result<BrokerUrl, UrlError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(UrlError::NoScheme);
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            _ => return Err(UrlError::UnsupportedScheme(scheme.to_owned())),
        };
        // A single trailing slash is harmless; anything after it is not.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(UrlError::Credentials);
        }
        if rest.contains(['/', '?', '#']) {
            return Err(UrlError::Path);
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let Some((host, after)) = bracketed.split_once(']') else {
                return Err(UrlError::UnclosedIpv6);
            };
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => return Err(UrlError::AfterIpv6),
                },
            };
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(UrlError::NotIpv6(host.to_owned()));
            }
            (host, port)
        } else {
            match rest.split_once(':') {
                Some((_, after)) if after.contains(':') => {
                    return Err(UrlError::Ipv6WithoutBrackets)
                }
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        if let Some(character) = host
            .chars()
            .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
        {
            return Err(UrlError::HostCharacter {
                host: host.to_owned(),
                character,
            });
        }
        let port = match port {
            None if tls => DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err(UrlError::Port(text.to_owned())),
            },
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }

    /// The host as it is written before `:port`: an IPv6 address in
    /// brackets, anything else as it is.
    pub fn authority_host(&self) -> Cow<'_, str> {
        if self.host.contains(':') {
            Cow::Owned(format!("[{}]", self.host))
        } else {
            Cow::Borrowed(&self.host)
        }
    }
}

impl fmt::Display for BrokerUrl {
    /// The normalized form: `mqtt` or `mqtts`, the host, and always the
    /// port.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.authority_host(), self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(tls: bool, host: &str, port: u16) -> BrokerUrl {
        BrokerUrl {
            tls,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn urls_parse_with_default_ports() {
        let u = BrokerUrl::parse("mqtt://localhost").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "localhost", 1883));
        assert_eq!(u.to_string(), "mqtt://localhost:1883");
        let u = BrokerUrl::parse("mqtts://broker.example.com/").unwrap();
        assert_eq!(u.to_string(), "mqtts://broker.example.com:8883");
        let u = BrokerUrl::parse("MQTT://[::1]:1884").unwrap();
        assert_eq!(u.to_string(), "mqtt://[::1]:1884");
        assert_eq!(BrokerUrl::parse("mqtt://10.0.0.1:1").unwrap().port, 1);
    }

    #[test]
    fn parses_schemes_hosts_and_default_ports() {
        let parse = BrokerUrl::parse;
        assert_eq!(parse("mqtt://localhost"), Ok(url(false, "localhost", 1883)));
        assert_eq!(
            parse("mqtts://b.example.com"),
            Ok(url(true, "b.example.com", 8883))
        );
        assert_eq!(
            parse("MQTT://127.0.0.1:1999/"),
            Ok(url(false, "127.0.0.1", 1999))
        );
        assert_eq!(parse("mqtts://[::1]:8884"), Ok(url(true, "::1", 8884)));
        assert_eq!(parse("mqtt://[::1]"), Ok(url(false, "::1", 1883)));
        assert_eq!(parse("mqtt://[::1]").unwrap().authority_host(), "[::1]");
        assert_eq!(parse("mqtt://h").unwrap().authority_host(), "h");
    }

    #[test]
    fn tcp_and_ssl_are_aliases_of_mqtt_and_mqtts() {
        let parse = BrokerUrl::parse;
        assert_eq!(parse("tcp://h"), Ok(url(false, "h", 1883)));
        assert_eq!(parse("TCP://h:1999"), Ok(url(false, "h", 1999)));
        assert_eq!(parse("ssl://h"), Ok(url(true, "h", 8883)));
        assert_eq!(parse("tcp://h").unwrap().to_string(), "mqtt://h:1883");
        assert_eq!(parse("ssl://h:1").unwrap().to_string(), "mqtts://h:1");
    }

    #[test]
    fn bad_urls_say_why() {
        let err = |u: &str| BrokerUrl::parse(u).unwrap_err().to_string();
        assert!(err("localhost:1883").starts_with("a broker URL starts with mqtt://"));
        assert_eq!(
            err("ws://h"),
            "unsupported scheme \"ws\": use mqtt:// (plain) or mqtts:// (TLS)"
        );
        assert_eq!(
            err("mqtt://h:0"),
            "the port must be a number from 1 to 65535, got \"0\""
        );
        assert_eq!(
            err("mqtt://h:70000"),
            "the port must be a number from 1 to 65535, got \"70000\""
        );
        assert_eq!(
            err("mqtt://h:+1"),
            "the port must be a number from 1 to 65535, got \"+1\""
        );
        assert!(err("mqtt://").starts_with("the URL has no host"));
        assert!(err("mqtt://:1883").starts_with("the URL has no host"));
        assert!(err("mqtt://h/x").starts_with("a broker URL has only a host and a port"));
        assert!(err("mqtt://u:p@h").starts_with("put credentials"));
        assert!(err("mqtt://::1").starts_with("an IPv6 address must be written in brackets"));
        assert_eq!(
            err("mqtt://a b"),
            "the host \"a b\" contains ' ', which is not allowed in a host name"
        );
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        for bad in [
            "localhost:1883",
            "http://h",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:70000",
            "mqtt://h:x",
            "mqtt://u:p@h",
            "mqtt://h/path",
            "mqtt://[::1",
        ] {
            let e = BrokerUrl::parse(bad).unwrap_err();
            let message = e.to_string();
            assert!(!message.is_empty() && !message.ends_with('.'), "{bad}: {e}");
        }
    }
}
