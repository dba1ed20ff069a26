//! Retained messages on disk, in a [`redb`] database: one table from topic
//! name to an encoded message. The shell owns the [`DiskStore`]: it reads
//! the file at start and writes the changes the core hands out.
//!
//! redb commits are atomic and durable (copy-on-write pages, fsync on
//! commit), so a broker killed at any moment reopens with every committed
//! change and none half-written. Changes are not written one by one: the
//! store keeps the latest state of each changed topic, and
//! [`DiskStore::commit`] writes them all in one transaction, once per batch
//! of events (group commit), before the batch's acknowledgements go out.
//!
//! # Value format (version 1)
//!
//! ```text
//! byte 0       format version, 1
//! bytes 1..9   stored at, milliseconds since the Unix epoch, big endian
//! byte 9       1 when an expiry interval follows, else 0
//! bytes 10..14 expiry interval in seconds, big endian (0 when none)
//! bytes 14..   the message as an MQTT 5.0 PUBLISH packet, written by
//!              rumqttc (packet identifier 1 when QoS > 0; it is not kept)
//! ```
//!
//! The expiry is stored as an interval from the stored-at time, both on the
//! wall clock, because the core's `Instant`s mean nothing after a restart.

use super::{RetainedMessage, RetainedRecord, RetainedStoreError, RetainedWrites};
use bytes::BytesMut;
use redb::{Database, ReadableTable, TableDefinition};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// Topic name to encoded message.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// The value format written; see the module documentation.
const VERSION: u8 = 1;

/// Bytes before the PUBLISH packet.
const HEADER: usize = 14;

/// The database and the changes not written yet.
pub struct DiskStore {
    db: Database,
    path: PathBuf,
    /// Changes staged and not written yet.
    pending: RetainedWrites,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .field("pending", &!self.pending.is_empty())
            .finish()
    }
}

impl DiskStore {
    /// Opens or creates the database at `path` and reads every entry.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or created, or an entry cannot be
    /// decoded.
    pub fn open(path: &Path) -> Result<(DiskStore, Vec<RetainedRecord>), RetainedStoreError> {
        let open_error = |reason: String| RetainedStoreError::Open {
            path: path.to_owned(),
            reason,
        };
        let db = Database::create(path).map_err(|e| open_error(e.to_string()))?;
        // Create the table on a new file, so that reading never has to tell
        // "no table" from other errors.
        let setup = db.begin_write().map_err(|e| open_error(e.to_string()))?;
        setup
            .open_table(TABLE)
            .map_err(|e| open_error(e.to_string()))?;
        setup.commit().map_err(|e| open_error(e.to_string()))?;

        let mut records = Vec::new();
        let read = db.begin_read().map_err(|e| open_error(e.to_string()))?;
        let table = read
            .open_table(TABLE)
            .map_err(|e| open_error(e.to_string()))?;
        let entries = table.iter().map_err(|e| open_error(e.to_string()))?;
        for entry in entries {
            let (key, value) = entry.map_err(|e| open_error(e.to_string()))?;
            let topic = key.value().to_owned();
            let record =
                decode(&topic, value.value()).map_err(|reason| RetainedStoreError::Corrupt {
                    path: path.to_owned(),
                    topic: topic.clone(),
                    reason,
                })?;
            records.push(record);
        }
        drop(table);
        drop(read);
        let store = DiskStore {
            db,
            path: path.to_owned(),
            pending: RetainedWrites::default(),
        };
        Ok((store, records))
    }

    /// Adds `writes` to the changes waiting for [`commit`](Self::commit);
    /// a later change to a topic replaces an earlier one.
    pub fn stage(&mut self, writes: RetainedWrites) {
        self.pending.merge(writes);
    }

    /// Whether changes wait for [`commit`](Self::commit).
    #[cfg(test)]
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes every pending change in one durable transaction; a no-op with
    /// nothing pending.
    ///
    /// # Errors
    ///
    /// When the write fails; the changes stay pending and are tried again
    /// at the next commit.
    pub fn commit(&mut self) -> Result<(), RetainedStoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let write_error = |reason: String| RetainedStoreError::Write {
            path: self.path.clone(),
            reason,
        };
        let txn = self
            .db
            .begin_write()
            .map_err(|e| write_error(e.to_string()))?;
        {
            let mut table = txn
                .open_table(TABLE)
                .map_err(|e| write_error(e.to_string()))?;
            let mut value = BytesMut::new();
            for (topic, change) in self.pending.iter() {
                match change {
                    Some(message) => {
                        value.clear();
                        encode(message, &mut value).map_err(write_error)?;
                        table
                            .insert(topic, &value[..])
                            .map_err(|e| write_error(e.to_string()))?;
                    }
                    None => {
                        table
                            .remove(topic)
                            .map_err(|e| write_error(e.to_string()))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| write_error(e.to_string()))?;
        self.pending.clear();
        Ok(())
    }
}

/// Appends the version 1 encoding of `message` to `out`.
fn encode(message: &RetainedMessage, out: &mut BytesMut) -> Result<(), String> {
    let millis = message
        .modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    out.extend_from_slice(&[VERSION]);
    out.extend_from_slice(&millis.to_be_bytes());
    out.extend_from_slice(&[u8::from(message.expiry_secs.is_some())]);
    out.extend_from_slice(&message.expiry_secs.unwrap_or(0).to_be_bytes());
    let mut publish = message.publish.clone();
    // The packet format needs an identifier for QoS 1 and 2; any will do.
    publish.pkid = u16::from(publish.qos != QoS::AtMostOnce);
    publish.dup = false;
    publish
        .write(out)
        .map(|_| ())
        .map_err(|e| format!("cannot encode the message: {e:?}"))
}

/// Decodes a value written by [`encode`].
fn decode(topic: &str, value: &[u8]) -> Result<RetainedRecord, String> {
    let Some((&version, rest)) = value.split_first() else {
        return Err("empty value".to_owned());
    };
    if version != VERSION {
        return Err(format!(
            "format version {version}, this broker reads version {VERSION}"
        ));
    }
    if value.len() < HEADER {
        return Err("value shorter than its header".to_owned());
    }
    let u64_at = |range: std::ops::Range<usize>| -> Option<u64> {
        Some(u64::from_be_bytes(rest.get(range)?.try_into().ok()?))
    };
    let millis = u64_at(0..8).ok_or("truncated header")?;
    let has_expiry = rest.get(8).copied().ok_or("truncated header")? != 0;
    let secs = rest
        .get(9..13)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or("truncated header")?;
    let mut packet = BytesMut::from(value.get(HEADER..).unwrap_or_default());
    let publish = match Packet::read(&mut packet, None) {
        Ok(Packet::Publish(mut publish)) => {
            publish.pkid = 0;
            publish
        }
        Ok(other) => return Err(format!("not a PUBLISH: {other:?}")),
        Err(e) => return Err(format!("cannot decode the PUBLISH: {e:?}")),
    };
    if publish.topic != topic.as_bytes() {
        return Err("the PUBLISH's topic differs from the key".to_owned());
    }
    Ok(RetainedRecord {
        topic: topic.to_owned(),
        publish,
        modified: UNIX_EPOCH + Duration::from_millis(millis),
        expiry_secs: has_expiry.then_some(secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    /// A fresh database path under the system temporary directory.
    pub fn temp_path(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "host-shim-retained-{name}-{}-{:?}.redb",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn encoding_round_trips_properties_qos_and_times() {
        let props = PublishProperties {
            message_expiry_interval: Some(30),
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..PublishProperties::default()
        };
        let mut publish = Publish::new(
            "a/b",
            QoS::ExactlyOnce,
            Bytes::from_static(b"x"),
            Some(props),
        );
        publish.retain = true;
        let mut message = RetainedMessage::new(
            publish.clone(),
            Instant::now(),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            0,
        );
        message.expiry_secs = Some(30);
        let mut out = BytesMut::new();
        encode(&message, &mut out).unwrap();
        let record = decode("a/b", &out).unwrap();
        assert_eq!(record.publish, publish);
        assert_eq!(record.modified, message.modified);
        assert_eq!(record.expiry_secs, Some(30));

        assert!(decode("a/c", &out).unwrap_err().contains("topic"));
        out[0] = 2;
        assert!(decode("a/b", &out).unwrap_err().contains("version 2"));
        assert!(decode("a/b", &[1, 0, 0]).is_err());
        assert!(decode("a/b", &[]).is_err());
    }

    #[test]
    fn commits_survive_reopening_and_failed_opens_are_clear() {
        let path = temp_path("reopen");
        {
            let (mut disk, loaded) = DiskStore::open(&path).unwrap();
            assert!(loaded.is_empty());
            let mut writes = RetainedWrites::default();
            for topic in ["t", "u"] {
                let publish = Publish::new(topic, QoS::AtLeastOnce, Bytes::from_static(b"1"), None);
                let message = RetainedMessage::new(publish, Instant::now(), SystemTime::now(), 0);
                writes.put(topic, Arc::new(message));
            }
            disk.stage(writes);
            disk.commit().unwrap();
            let mut writes = RetainedWrites::default();
            writes.delete("u");
            disk.stage(writes);
            assert!(disk.has_pending());
            // Not committed: lost, as a kill before the commit would lose it.
        }
        let (_, loaded) = DiskStore::open(&path).unwrap();
        let topics: Vec<&str> = loaded.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(topics, ["t", "u"]);
        std::fs::remove_file(&path).unwrap();

        let missing = std::env::temp_dir().join("host-shim-no-such-dir/x.redb");
        let err = DiskStore::open(&missing).unwrap_err();
        assert!(matches!(err, RetainedStoreError::Open { .. }));
        assert!(err.to_string().contains("host-shim-no-such-dir"), "{err}");
    }
}
