//! Broker URLs: `mqtt://host[:port]` and `mqtts://host[:port]`.

use connector::model::{Error, ErrorCode};

/// Where to connect, parsed from a broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Host name or IP address; IPv6 literals keep their brackets so that
    /// `host:port` stays parseable.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to speak TLS.
    pub tls: bool,
}

fn invalid(url: &str, why: &str) -> Error {
    Error::new(
        ErrorCode::InvalidConfig,
        format!("invalid broker url '{url}': {why}"),
    )
}

/// Parses `mqtt://host[:port]` (port 1883 by default) or
/// `mqtts://host[:port]` (TLS, port 8883 by default). A trailing `/` is
/// allowed; paths, queries and credentials in the URL are not.
pub(crate) fn parse(url: &str) -> Result<Endpoint, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid(url, "expected mqtt://host[:port] or mqtts://host[:port]"))?;
    let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        other => {
            return Err(invalid(
                url,
                &format!("unsupported scheme '{other}', use mqtt or mqtts"),
            ))
        }
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(invalid(url, "a path or query is not supported"));
    }
    if authority.contains('@') {
        return Err(invalid(
            url,
            "put credentials in username and password, not in the url",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid(url, "unclosed '[' in the host"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| invalid(url, "expected ':' after ']'"))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(invalid(url, "the host is missing"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(invalid(url, &format!("bad port '{p}'"))),
            Ok(port) => port,
        },
    };
    Ok(Endpoint { host, port, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16, tls: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            tls,
        }
    }

    #[test]
    fn parses_schemes_hosts_and_default_ports() {
        assert_eq!(parse("mqtt://localhost"), Ok(ep("localhost", 1883, false)));
        assert_eq!(
            parse("mqtts://b.example.com"),
            Ok(ep("b.example.com", 8883, true))
        );
        assert_eq!(
            parse("MQTT://127.0.0.1:1999/"),
            Ok(ep("127.0.0.1", 1999, false))
        );
        assert_eq!(parse("mqtts://[::1]:8884"), Ok(ep("[::1]", 8884, true)));
        assert_eq!(parse("mqtt://[::1]"), Ok(ep("[::1]", 1883, false)));
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
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{bad}");
        }
    }
}
