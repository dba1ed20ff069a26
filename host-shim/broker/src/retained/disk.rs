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
//! # Value format (version 2)
//!
//! ```text
//! byte 0       format version, 2
//! bytes 1..5   CRC-32 (IEEE) of the topic name and of bytes 5.., big endian
//! bytes 5..13  stored at, milliseconds since the Unix epoch, big endian
//! byte 13      1 when an expiry interval follows, else 0
//! bytes 14..18 expiry interval in seconds, big endian (0 when none)
//! bytes 18..   the message as an MQTT 5.0 PUBLISH packet, written by
//!              rumqttc (packet identifier 1 when QoS > 0; it is not kept)
//! ```
//!
//! Version 1, written by earlier versions, is the same without the
//! checksum; it is still read, and rewritten as version 2 when its topic
//! next changes.
//!
//! The expiry is stored as an interval from the stored-at time, both on the
//! wall clock, because the core's `Instant`s mean nothing after a restart.
//!
//! # Damage
//!
//! Nothing in the file can crash the broker. A file redb cannot open, or
//! that makes redb panic (a truncated file can), is a start error naming
//! the file and what to do. An entry whose checksum or encoding is wrong is
//! reported and left out: never served, and replaced when its topic is next
//! retained.
//!
//! The file may also hold the session store's tables, when
//! `sessions.storage` names it too (see `crate::disk`).

use super::{RetainedMessage, RetainedRecord, RetainedStoreError, RetainedWrites};
use crate::disk::{self, DbFile, FileError};
use bytes::BytesMut;
use redb::{ReadableTable, TableDefinition};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// Topic name to encoded message.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// The value format written; see the module documentation.
const VERSION: u8 = 2;

/// The format without a checksum, still read.
const VERSION_1: u8 = 1;

/// Bytes before the fields in version 1: the version byte.
const PREFIX_V1: usize = 1;

/// Bytes before the fields in version 2: the version byte and the checksum.
const PREFIX_V2: usize = 5;

/// Bytes of the fields before the PUBLISH packet.
const FIELDS: usize = 13;

/// What to do about a damaged file, said with every error about one.
const DAMAGED_HINT: &str =
    "restore the file from a backup, or move it away to start with no retained messages";

/// The database and the changes not written yet.
#[derive(Debug)]
pub struct DiskStore {
    file: DbFile,
    /// Changes staged and not written yet.
    pending: RetainedWrites,
}

impl DiskStore {
    /// Opens or creates the database at `path` and reads every entry; see
    /// [`DiskStore::load`].
    ///
    /// # Errors
    ///
    /// [`RetainedStoreError::Open`] when the file cannot be opened or
    /// created, [`RetainedStoreError::Damaged`] when it is not a database
    /// this broker can read.
    pub fn open(path: &Path) -> Result<(DiskStore, Vec<RetainedRecord>), RetainedStoreError> {
        let file = DbFile::open(path).map_err(|e| file_error(path, e))?;
        DiskStore::load(file)
    }

    /// Reads every entry of the open database `file`. An entry that cannot
    /// be decoded, or whose checksum is wrong, is logged and left out.
    ///
    /// # Errors
    ///
    /// [`RetainedStoreError::Damaged`] when it is not a database this
    /// broker can read.
    pub fn load(file: DbFile) -> Result<(DiskStore, Vec<RetainedRecord>), RetainedStoreError> {
        let loaded =
            disk::guarded(|| read_entries(&file)).map_err(|e| file_error(file.path(), e))?;
        let path = file.path();
        let mut records = Vec::with_capacity(loaded.len());
        for (topic, record) in loaded {
            match record {
                Ok(record) => records.push(record),
                Err(reason) => {
                    let error = RetainedStoreError::Corrupt {
                        path: path.to_owned(),
                        topic,
                        reason,
                    };
                    tracing::error!(
                        "{error}; the entry is not loaded, and is replaced when its topic is \
                         next retained"
                    );
                }
            }
        }
        let store = DiskStore {
            file,
            pending: RetainedWrites::default(),
        };
        Ok((store, records))
    }

    /// The open database file, which the session store may share.
    pub fn file(&self) -> &DbFile {
        &self.file
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
        let pending = &self.pending;
        self.file
            .write(|txn| {
                let mut table = txn.open_table(TABLE).map_err(|e| e.to_string())?;
                let mut value = BytesMut::new();
                for (topic, change) in pending.iter() {
                    match change {
                        Some(message) => {
                            value.clear();
                            encode(topic, message, &mut value)?;
                            table.insert(topic, &value[..]).map_err(|e| e.to_string())?;
                        }
                        None => {
                            table.remove(topic).map_err(|e| e.to_string())?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(|reason| RetainedStoreError::Write {
                path: self.file.path().to_owned(),
                reason,
            })?;
        self.pending.clear();
        Ok(())
    }
}

/// Each entry of a database file as read: its topic, and its record or why
/// it cannot be decoded.
type Entries = Vec<(String, Result<RetainedRecord, String>)>;

/// Every entry of the database, without the guard against panics.
fn read_entries(file: &DbFile) -> Result<Entries, FileError> {
    let db = file.db();
    let read_error = |e: &dyn std::fmt::Display| FileError::Damaged(e.to_string());
    // Create the table on a new file, so that reading never has to tell
    // "no table" from other errors.
    let setup = db.begin_write().map_err(|e| read_error(&e))?;
    setup.open_table(TABLE).map_err(|e| read_error(&e))?;
    setup.commit().map_err(|e| read_error(&e))?;

    let mut entries = Vec::new();
    let read = db.begin_read().map_err(|e| read_error(&e))?;
    let table = read.open_table(TABLE).map_err(|e| read_error(&e))?;
    for entry in table.iter().map_err(|e| read_error(&e))? {
        let (key, value) = entry.map_err(|e| read_error(&e))?;
        let topic = key.value().to_owned();
        let record = decode(&topic, value.value());
        entries.push((topic, record));
    }
    Ok(entries)
}

/// The store's error for a file it cannot use.
fn file_error(path: &Path, error: FileError) -> RetainedStoreError {
    match error {
        FileError::Open(reason) => RetainedStoreError::Open {
            path: path.to_owned(),
            reason,
        },
        FileError::Damaged(reason) => RetainedStoreError::Damaged {
            path: path.to_owned(),
            reason: format!("{reason}; {DAMAGED_HINT}"),
        },
    }
}

/// Appends the version 2 encoding of `message`, retained on `topic`, to
/// `out` (which must be empty).
fn encode(topic: &str, message: &RetainedMessage, out: &mut BytesMut) -> Result<(), String> {
    let millis = message
        .modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    out.extend_from_slice(&[VERSION, 0, 0, 0, 0]);
    out.extend_from_slice(&millis.to_be_bytes());
    out.extend_from_slice(&[u8::from(message.expiry_secs.is_some())]);
    out.extend_from_slice(&message.expiry_secs.unwrap_or(0).to_be_bytes());
    // The packet identifier is not kept: any will do.
    let mut publish = message.publish.clone();
    publish.pkid = 0;
    disk::write_publish(&publish, out)?;
    let crc = checksum(topic, &out[PREFIX_V2..]);
    out[1..PREFIX_V2].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The checksum of a version 2 value: the topic is the key.
fn checksum(topic: &str, fields: &[u8]) -> u32 {
    disk::checksum(&[topic.as_bytes()], fields)
}

/// Decodes a value written by [`encode`], or by version 1.
fn decode(topic: &str, value: &[u8]) -> Result<RetainedRecord, String> {
    let Some(&version) = value.first() else {
        return Err("empty value".to_owned());
    };
    let fields = match version {
        VERSION_1 => &value[PREFIX_V1..],
        VERSION => {
            let stored = value
                .get(1..PREFIX_V2)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or("value shorter than its header")?;
            let fields = &value[PREFIX_V2..];
            if checksum(topic, fields) != stored {
                return Err("checksum mismatch: the stored value was changed or damaged".to_owned());
            }
            fields
        }
        other => {
            return Err(format!(
                "format version {other}, this broker reads versions {VERSION_1} and {VERSION}"
            ))
        }
    };
    let (Some(millis), Some(&has_expiry), Some(secs), Some(packet)) = (
        fields
            .get(0..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes),
        fields.get(8),
        fields
            .get(9..13)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes),
        fields.get(FIELDS..),
    ) else {
        return Err("value shorter than its header".to_owned());
    };
    let mut publish = disk::read_publish(packet)?;
    publish.pkid = 0;
    if publish.topic != topic.as_bytes() {
        return Err("the PUBLISH's topic differs from the key".to_owned());
    }
    Ok(RetainedRecord {
        topic: topic.to_owned(),
        publish,
        modified: UNIX_EPOCH + Duration::from_millis(millis),
        expiry_secs: (has_expiry != 0).then_some(secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS;
    use std::path::PathBuf;
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
        encode("a/b", &message, &mut out).unwrap();
        let record = decode("a/b", &out).unwrap();
        assert_eq!(record.publish, publish);
        assert_eq!(record.modified, message.modified);
        assert_eq!(record.expiry_secs, Some(30));

        // A value under another key fails its checksum (the key is in it).
        assert!(decode("a/c", &out).unwrap_err().contains("checksum"));
        // Version 1: the same fields without a checksum.
        let mut v1 = vec![VERSION_1];
        v1.extend_from_slice(&out[PREFIX_V2..]);
        assert_eq!(decode("a/b", &v1).unwrap().publish, publish);
        assert!(decode("a/c", &v1).unwrap_err().contains("topic"));
        let mut other = out.clone();
        other[0] = 9;
        assert!(decode("a/b", &other).unwrap_err().contains("version 9"));
        // One changed payload byte.
        let last = out.len() - 1;
        out[last] ^= 1;
        assert!(decode("a/b", &out).unwrap_err().contains("checksum"));
        assert!(decode("a/b", &[1, 0, 0]).is_err());
        assert!(decode("a/b", &[2, 0, 0]).is_err());
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
