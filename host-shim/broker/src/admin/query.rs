//! What a request asks for: the parameters of `GET /retained` and the
//! topic of `/retained/TOPIC`, percent-decoded by the endpoint's own rule,
//! in which `+` stays `+` (MQTT's wildcard, not a space as in HTML forms).

use super::{Refusal, DEFAULT_PAGE_SIZE};
use crate::MAX_PAGE_SIZE;
use percent_encoding::percent_decode_str;

/// The parameters of `GET /retained`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListQuery {
    pub filter: String,
    pub page_size: usize,
    pub cursor: Option<String>,
}

impl ListQuery {
    /// Reads `filter`, `page_size` and `cursor` from the query string; any
    /// other parameter is an error.
    pub fn parse(query: &str) -> Result<ListQuery, Refusal> {
        let mut list = ListQuery {
            filter: "#".to_owned(),
            page_size: DEFAULT_PAGE_SIZE,
            cursor: None,
        };
        for (name, value) in parse_query(query)? {
            match name.as_str() {
                "filter" => list.filter = value,
                "page_size" => {
                    list.page_size = match value.parse::<usize>() {
                        Ok(0) | Err(_) => {
                            return Err(Refusal::bad_request(
                                "page_size must be a whole number from 1",
                            ))
                        }
                        Ok(n) => n.min(MAX_PAGE_SIZE),
                    }
                }
                "cursor" => list.cursor = Some(value),
                other => {
                    return Err(Refusal::bad_request(format!(
                        "unknown parameter {other:?}: use filter, page_size and cursor"
                    )))
                }
            }
        }
        Ok(list)
    }
}

/// Rejects any parameter, for endpoints that take none.
pub(super) fn no_params(query: &str) -> Result<(), Refusal> {
    match parse_query(query)?.first() {
        None => Ok(()),
        Some((name, _)) => Err(Refusal::bad_request(format!(
            "unknown parameter {name:?}: this endpoint takes none"
        ))),
    }
}

/// The topic name of `/retained/TOPIC`: the rest of the path, decoded, so
/// `/` may stay as it is or be `%2F`.
pub(super) fn topic(path: &str) -> Result<String, Refusal> {
    let encoded = path.strip_prefix("/retained/").unwrap_or_default();
    let topic = decode(encoded)?;
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return Err(Refusal::bad_request(format!("not a topic name: {topic:?}")));
    }
    Ok(topic)
}

/// Splits and decodes `a=1&b=2`. A parameter given twice is an error, so
/// that a typo cannot go unnoticed behind a second value.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, Refusal> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode(name)?, decode(value)?);
        if params.iter().any(|(n, _)| *n == name) {
            return Err(Refusal::bad_request(format!(
                "parameter {name:?} given twice"
            )));
        }
        params.push((name, value));
    }
    Ok(params)
}

/// Percent-decodes to UTF-8. `+` stays `+`: it is MQTT's wildcard, not a
/// space.
fn decode(text: &str) -> Result<String, Refusal> {
    let bytes = text.as_bytes();
    // `percent_decode` leaves a malformed escape as it is; a client that
    // sent one meant something else, so say so.
    for (i, _) in text.match_indices('%') {
        let valid = bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !valid {
            return Err(Refusal::bad_request(
                "a `%` is not followed by two hex digits",
            ));
        }
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Refusal::bad_request("a percent-encoded value is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(filter: &str, page_size: usize, cursor: Option<&str>) -> ListQuery {
        ListQuery {
            filter: filter.to_owned(),
            page_size,
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn list_parameters() {
        assert_eq!(ListQuery::parse(""), Ok(list("#", 100, None)));
        assert_eq!(
            ListQuery::parse("filter=a/%2B/c&page_size=5&cursor=a%2Fb"),
            Ok(list("a/+/c", 5, Some("a/b")))
        );
        // `+` is the wildcard, not a space.
        assert_eq!(
            ListQuery::parse("filter=a/+/%23"),
            Ok(list("a/+/#", 100, None))
        );
        assert_eq!(
            ListQuery::parse("page_size=99999"),
            Ok(list("#", MAX_PAGE_SIZE, None))
        );
        assert_eq!(ListQuery::parse("&&filter=a&"), Ok(list("a", 100, None)));
    }

    #[test]
    fn topics() {
        assert_eq!(topic("/retained/a/b%20c"), Ok("a/b c".to_owned()));
        assert_eq!(topic("/retained/a%2Fb"), Ok("a/b".to_owned()));
        // A topic named like an endpoint is still a topic.
        assert_eq!(topic("/retained/count"), Ok("count".to_owned()));
        assert_eq!(topic("/retained/%C3%A9"), Ok("é".to_owned()));
    }

    #[test]
    fn bad_parameters_say_why() {
        let error = |result: Result<ListQuery, Refusal>| result.unwrap_err().message;
        assert!(error(ListQuery::parse("page_size=0")).contains("page_size"));
        assert!(error(ListQuery::parse("page_size=-1")).contains("page_size"));
        assert!(error(ListQuery::parse("pagesize=1")).contains("\"pagesize\""));
        assert!(error(ListQuery::parse("filter=a&filter=b")).contains("twice"));
        for bad in ["filter=%zz", "filter=%", "filter=%f"] {
            assert!(
                error(ListQuery::parse(bad)).contains("two hex digits"),
                "{bad}"
            );
        }
        assert!(error(ListQuery::parse("filter=%ff")).contains("UTF-8"));
        assert!(no_params("").is_ok());
        assert!(no_params("x").unwrap_err().message.contains("takes none"));
        for bad in [
            "/retained/",
            "/retained/a/%23",
            "/retained/a/+",
            "/retained/a%00",
        ] {
            assert!(
                topic(bad).unwrap_err().message.contains("not a topic name"),
                "{bad}"
            );
        }
    }
}
