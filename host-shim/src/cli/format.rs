//! How `host-shim listen` prints a document: a JSON line (the default),
//! `topic payload` (`-v`, as `mosquitto_sub -v`), or a `-F` format with
//! Mosquitto's `%` fields and `\` escapes.

use host_shim::flow::{to_received, Received};
use host_shim::host::Document;
use std::fmt::Write as _;

/// The shape of each printed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One JSON object per line.
    Json,
    /// `topic payload`, the payload as its bytes.
    Verbose,
    /// A `-F` format.
    Format(Vec<Piece>),
}

/// One part of a `-F` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text printed as it is.
    Text(String),
    /// `%t`: the topic.
    Topic,
    /// `%p`: the payload's bytes.
    Payload,
    /// `%q`: the QoS the message arrived at.
    Qos,
    /// `%r`: 1 when the message is retained, else 0.
    Retained,
    /// `%l`: the payload's length in bytes.
    Length,
    /// `%x`: the payload in hexadecimal.
    Hex,
    /// `%j`: the document as the JSON line `listen` prints by default.
    Json,
}

/// The fields `-F` knows, for its help and its errors.
pub const FIELDS: &str = "%t topic, %p payload, %q QoS, %r retained (0 or 1), %l payload \
                          length, %x payload in hex, %j the JSON line, %% a %";

/// Why a `-F` format is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A `%` followed by a letter that names no field.
    #[error("unknown field %{0} in -F; known: {FIELDS}")]
    UnknownField(char),
    /// A `%` at the end.
    #[error("-F ends with a lone %; write %% for a %")]
    LonePercent,
}

/// Parses a `-F` format: `%` fields and the escapes `\n`, `\t`, `\\`,
/// `\e`, `\0`; any other `\x` stays as written.
pub fn parse(format: &str) -> Result<Vec<Piece>, FormatError> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let piece = match chars.next() {
                    None => return Err(FormatError::LonePercent),
                    Some('%') => {
                        text.push('%');
                        continue;
                    }
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Payload,
                    Some('q') => Piece::Qos,
                    Some('r') => Piece::Retained,
                    Some('l') => Piece::Length,
                    Some('x') => Piece::Hex,
                    Some('j') => Piece::Json,
                    Some(other) => return Err(FormatError::UnknownField(other)),
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
            }
            '\\' => match chars.next() {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('\\') => text.push('\\'),
                Some('e') => text.push('\x1b'),
                Some('0') => text.push('\0'),
                Some(other) => {
                    text.push('\\');
                    text.push(other);
                }
                None => text.push('\\'),
            },
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// The bytes printed for `document`, its line end included.
pub fn render(output: &Output, document: &Document) -> Vec<u8> {
    let received = to_received(document);
    let mut out = match output {
        Output::Json => received.to_json_line().into_bytes(),
        Output::Verbose => {
            let mut out = received.topic.clone().unwrap_or_default().into_bytes();
            out.push(b' ');
            out.extend_from_slice(&received.payload);
            out
        }
        Output::Format(pieces) => {
            let mut out = Vec::new();
            for piece in pieces {
                render_piece(piece, &received, &mut out);
            }
            out
        }
    };
    out.push(b'\n');
    out
}

fn render_piece(piece: &Piece, received: &Received, out: &mut Vec<u8>) {
    match piece {
        Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
        Piece::Topic => out.extend_from_slice(received.topic.as_deref().unwrap_or("").as_bytes()),
        Piece::Payload => out.extend_from_slice(&received.payload),
        Piece::Qos => out.extend_from_slice(received.qos.unwrap_or(0).to_string().as_bytes()),
        Piece::Retained => out.push(if received.retained == Some(true) {
            b'1'
        } else {
            b'0'
        }),
        Piece::Length => out.extend_from_slice(received.payload.len().to_string().as_bytes()),
        Piece::Hex => {
            let mut hex = String::with_capacity(2 * received.payload.len());
            for byte in &received.payload {
                let _ = write!(hex, "{byte:02x}");
            }
            out.extend_from_slice(hex.as_bytes());
        }
        Piece::Json => out.extend_from_slice(received.to_json_line().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_shim::host::{Property, Value};

    fn document() -> Document {
        Document {
            id: 1,
            payload: b"hi".to_vec(),
            properties: vec![
                Property {
                    name: "mqtt.topic".into(),
                    value: Value::Text("a/b".into()),
                },
                Property {
                    name: "mqtt.qos".into(),
                    value: Value::Integer(1),
                },
                Property {
                    name: "mqtt.retained".into(),
                    value: Value::Boolean(true),
                },
            ],
        }
    }

    fn text(output: &Output) -> String {
        String::from_utf8(render(output, &document())).unwrap()
    }

    #[test]
    fn verbose_is_topic_space_payload() {
        assert_eq!(text(&Output::Verbose), "a/b hi\n");
    }

    #[test]
    fn format_fields_and_escapes() {
        let format = Output::Format(parse(r"%t|%p|%q|%r|%l|%x|100%%\t.").unwrap());
        assert_eq!(text(&format), "a/b|hi|1|1|2|6869|100%\t.\n");
        let json = text(&Output::Format(parse("%j").unwrap()));
        assert_eq!(json, text(&Output::Json));
        assert!(
            json.starts_with(r#"{"topic":"a/b","qos":1,"retained":true"#),
            "{json}"
        );
    }

    #[test]
    fn bad_formats_say_why() {
        assert_eq!(parse("%z"), Err(FormatError::UnknownField('z')));
        assert_eq!(parse("50%"), Err(FormatError::LonePercent));
        assert!(FormatError::UnknownField('z')
            .to_string()
            .contains("%t topic"));
    }
}
