//! Checking what a step did against its `expect` block. Each check returns
//! every difference, as sentences, so a failed step says all that is wrong.

use super::{base64_encode, DocumentMatch, ListenExpect, Received, SendExpect};
use serde_json::Value as Json;

/// What a `send` step did: one outcome per document, or the operation's own
/// error.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// The batch ran: `Err(message)` for each failed document.
    Batch(Vec<Result<(), String>>),
    /// The operation failed as a whole.
    Failed(String),
}

/// Differences between a send and its expectation; without one, every
/// document must succeed.
pub fn send(expect: Option<&SendExpect>, sent: &Sent) -> Vec<String> {
    let default = SendExpect::default();
    let expect = expect.unwrap_or(&default);
    let outcomes = match (sent, &expect.error) {
        (Sent::Failed(err), Some(want)) if err.contains(want.as_str()) => return Vec::new(),
        (Sent::Failed(err), Some(want)) => {
            return vec![format!(
                "expected an error containing {want:?}, got {err:?}"
            )]
        }
        (Sent::Failed(err), None) => return vec![format!("the send failed: {err}")],
        (Sent::Batch(_), Some(want)) => {
            return vec![format!(
                "expected an error containing {want:?}, the send ran"
            )]
        }
        (Sent::Batch(outcomes), None) => outcomes,
    };

    let errors: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().map(String::as_str))
        .collect();
    let ok = outcomes.len() - errors.len();
    let mut diffs = Vec::new();
    let nothing_said = expect.ok.is_none() && expect.failed.is_none() && expect.errors.is_none();
    if nothing_said && !errors.is_empty() {
        diffs.push(format!(
            "{} of {} documents failed",
            errors.len(),
            outcomes.len()
        ));
    }
    if let Some(want) = expect.ok.filter(|&want| want != ok) {
        diffs.push(format!("expected {want} ok, got {ok}"));
    }
    if let Some(want) = expect.failed.filter(|&want| want != errors.len()) {
        diffs.push(format!("expected {want} failed, got {}", errors.len()));
    }
    if let Some(want) = &expect.errors {
        if want.len() != errors.len() {
            diffs.push(format!(
                "expected {} errors, got {}",
                want.len(),
                errors.len()
            ));
        }
        for (i, (want, got)) in want.iter().zip(&errors).enumerate() {
            if !got.contains(want.as_str()) {
                diffs.push(format!(
                    "error {i}: expected it to contain {want:?}, got {got:?}"
                ));
            }
        }
    }
    diffs
}

/// Differences between what a listener received and its expectation.
/// `error` is the operation's error, if it failed.
pub fn listen(
    expect: Option<&ListenExpect>,
    received: &[Received],
    error: Option<&str>,
) -> Vec<String> {
    let default = ListenExpect::default();
    let expect = expect.unwrap_or(&default);
    match (error, &expect.error) {
        (Some(err), Some(want)) if err.contains(want.as_str()) => return Vec::new(),
        (Some(err), Some(want)) => {
            return vec![format!(
                "expected an error containing {want:?}, got {err:?}"
            )]
        }
        (Some(err), None) => return vec![format!("the listener failed: {err}")],
        (None, Some(want)) => {
            return vec![format!(
                "expected an error containing {want:?}, there was none"
            )]
        }
        (None, None) => {}
    }

    let mut diffs = Vec::new();
    if let Some(want) = expect.count.filter(|&want| want != received.len()) {
        diffs.push(format!("expected {want} documents, got {}", received.len()));
    }
    if let Some(want) = expect.retained {
        for (i, doc) in received.iter().enumerate() {
            if doc.retained != Some(want) {
                diffs.push(format!(
                    "document {i}: expected retained {want}, got {}",
                    show(&doc.retained)
                ));
            }
        }
    }
    if let Some(want) = &expect.payloads {
        let mut got: Vec<String> = received.iter().map(payload_shown).collect();
        let mut want = want.clone();
        if expect.any_order {
            got.sort();
            want.sort();
        }
        if got != want {
            diffs.push(format!("expected payloads {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = &expect.documents {
        if want.len() != received.len() {
            diffs.push(format!(
                "expected {} documents, got {}",
                want.len(),
                received.len()
            ));
        }
        if expect.any_order {
            diffs.extend(match_any_order(want, received));
        } else {
            for (i, (want, got)) in want.iter().zip(received).enumerate() {
                diffs.extend(
                    document(want, got)
                        .into_iter()
                        .map(|d| format!("document {i}: {d}")),
                );
            }
        }
    }
    // One sentence per difference is clear; a hundred are noise.
    if diffs.len() > 10 {
        diffs.truncate(10);
        diffs.push("(more differences left out)".to_owned());
    }
    diffs
}

/// Each matcher takes the first document it matches that no other matcher
/// took; a greedy choice is enough for the partial descriptions flows use.
fn match_any_order(want: &[DocumentMatch], received: &[Received]) -> Vec<String> {
    let mut taken = vec![false; received.len()];
    let mut diffs = Vec::new();
    for (i, matcher) in want.iter().enumerate() {
        let found = received
            .iter()
            .enumerate()
            .find(|(j, doc)| !taken[*j] && document(matcher, doc).is_empty());
        match found {
            Some((j, _)) => taken[j] = true,
            None => diffs.push(format!(
                "no document matches expected document {i}: {}",
                serde_json::to_string(matcher).unwrap_or_default()
            )),
        }
    }
    diffs
}

/// The differences between one document and its description.
pub fn document(want: &DocumentMatch, got: &Received) -> Vec<String> {
    let mut diffs = Vec::new();
    if want.topic.is_some() && want.topic != got.topic {
        diffs.push(format!(
            "expected topic {}, got {}",
            show(&want.topic),
            show(&got.topic)
        ));
    }
    if want.qos.is_some() && want.qos != got.qos {
        diffs.push(format!(
            "expected qos {}, got {}",
            show(&want.qos),
            show(&got.qos)
        ));
    }
    if want.retained.is_some() && want.retained != got.retained {
        diffs.push(format!(
            "expected retained {}, got {}",
            show(&want.retained),
            show(&got.retained)
        ));
    }
    if let Some(payload) = &want.payload {
        if got.payload != payload.as_bytes() {
            diffs.push(format!(
                "expected payload {payload:?}, got {:?}",
                payload_shown(got)
            ));
        }
    }
    if let Some(b64) = &want.payload_base64 {
        let have = base64_encode(&got.payload);
        if *b64 != have {
            diffs.push(format!("expected payload_base64 {b64:?}, got {have:?}"));
        }
    }
    for (name, value) in &want.properties {
        let have = got.properties.get(name).unwrap_or(&Json::Null);
        if have != value {
            diffs.push(format!("expected property {name} = {value}, got {have}"));
        }
    }
    diffs
}

/// The payload as the text a person compares: UTF-8, else `base64:...`.
fn payload_shown(doc: &Received) -> String {
    match doc.payload_text() {
        Some(text) => text.to_owned(),
        None => format!("base64:{}", base64_encode(&doc.payload)),
    }
}

fn show<T: std::fmt::Debug>(value: &Option<T>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "nothing".to_owned(),
    }
}
