//! The JSON bodies of the admin endpoint, shared with its client
//! (`host-shim retained`). Each is a struct, so its keys keep their order
//! on the wire.

use crate::{RetainedEntry, RetainedInfo, RetainedPage};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One retained message as the endpoint sends it: in a listing without
/// its payload, from `GET /retained/TOPIC` with `payload` (UTF-8 text) or
/// `payload_base64` (anything else), as `host-shim listen` prints
/// documents. The fields keep this order on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminEntry {
    /// The topic name.
    pub topic: String,
    /// The QoS it was published with.
    pub qos: u8,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// When it was stored, in seconds since the Unix epoch.
    pub last_modified: u64,
    /// Seconds until it expires; `null` never expires.
    pub expires_in: Option<u64>,
    /// The payload, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in standard base64, when it is not UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl From<RetainedInfo> for AdminEntry {
    fn from(info: RetainedInfo) -> Self {
        AdminEntry {
            topic: info.topic,
            qos: info.qos,
            payload_bytes: info.payload_bytes,
            last_modified: info.last_modified,
            expires_in: info.expires_in,
            payload: None,
            payload_base64: None,
        }
    }
}

impl From<RetainedEntry> for AdminEntry {
    fn from(entry: RetainedEntry) -> Self {
        let mut out = AdminEntry::from(entry.info);
        match std::str::from_utf8(&entry.payload) {
            Ok(text) => out.payload = Some(text.to_owned()),
            Err(_) => {
                out.payload_base64 =
                    Some(base64::engine::general_purpose::STANDARD.encode(&entry.payload))
            }
        }
        out
    }
}

/// The answer to `GET /retained`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminPage {
    /// The page's messages, in topic order, without payloads.
    pub entries: Vec<AdminEntry>,
    /// The `cursor` of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<RetainedPage> for AdminPage {
    fn from(page: RetainedPage) -> Self {
        AdminPage {
            entries: page.entries.into_iter().map(AdminEntry::from).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// The answer to `GET /retained-count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCount {
    /// Retained messages stored and not expired.
    pub count: usize,
}

/// The answer to `DELETE /retained/TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminDeleted {
    /// The topic whose message was deleted.
    pub topic: String,
    /// Always true: a topic without a message answers 404.
    pub deleted: bool,
}

/// An error answer's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminErrorBody {
    /// What went wrong, as a sentence.
    pub error: String,
}
