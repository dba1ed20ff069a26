//! Persistent sessions on disk, in a [`redb`] database (`sessions.storage`),
//! possibly the retained store's file. The shell owns the [`SessionStore`]:
//! it reads the sessions at start and writes the changes the core hands out,
//! all of a batch in one transaction, before the batch's acknowledgements
//! go out.
//!
//! # Tables
//!
//! Each entry is keyed by the client identifier and what the entry is, so
//! a change writes only itself, and a session is deleted by key ranges:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `sessions` | client id | protocol, expiry interval, disconnected at, last packet identifier, user name |
//! | `session_subscriptions` | client id, full filter | granted QoS, options, subscription identifier |
//! | `session_incoming_qos2` | client id, packet identifier | none: PUBREC sent, PUBREL awaited |
//! | `session_inflight` | client id, packet identifier | place in the order, PUBLISH (as sent) or PUBREL |
//! | `session_queue` | client id, place in the queue | delivery QoS, RETAIN, expiry (wall clock), subscription identifiers, the PUBLISH |
//!
//! # Value format (version 1)
//!
//! ```text
//! byte 0       format version, 1
//! bytes 1..5   CRC-32 (IEEE) of the key's parts and of bytes 5.., big endian
//! bytes 5..    the fields, integers big endian; a time is milliseconds since
//!              the Unix epoch after a byte saying whether there is one; a
//!              PUBLISH is an MQTT 5.0 packet written by rumqttc
//! ```
//!
//! # Damage
//!
//! As for the retained store: a file redb cannot open, or that makes it
//! panic, is a start error naming the file and what to do; an entry whose
//! checksum or encoding is wrong is logged and left out (its session is
//! then written again whole), and entries of a session whose own record is
//! gone are deleted.

use super::stored::{SessionMeta, SessionRecord, SessionWrites, StoredInflight, StoredQueued};
use super::{Inflight, Message, Queued, SharedDelivery};
use crate::disk::{self, DbFile, FileError};
use crate::types::SubOptions;
use bytes::BytesMut;
use mqtt_topic::{MqttVersion, TopicFilter};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use rumqttc::v5::mqttbytes::v5::RetainForwardRule;
use rumqttc::v5::mqttbytes::QoS;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Client identifier to the session's own state.
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// Client identifier and full filter to the subscription's options.
const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("session_subscriptions");

/// Client identifier and packet identifier: a QoS 2 PUBLISH from the client
/// whose PUBREL has not come.
const INCOMING: TableDefinition<(&str, u16), ()> = TableDefinition::new("session_incoming_qos2");

/// Client identifier and packet identifier to a message in flight.
const INFLIGHT: TableDefinition<(&str, u16), &[u8]> = TableDefinition::new("session_inflight");

/// Client identifier and place in the queue to a queued message.
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("session_queue");

/// The value format written; see the module documentation.
const VERSION: u8 = 1;

/// Bytes before the fields: the version byte and the checksum.
const PREFIX: usize = 5;

/// What to do about a damaged file, said with every error about one.
const DAMAGED_HINT: &str =
    "restore the file from a backup, or move it away to start with no stored sessions";

/// The session store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreError {
    /// The database file could not be opened or created (missing directory,
    /// no permission, held by another broker).
    #[error("cannot open the session store {}: {reason}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file is not a database this broker can read: damaged, truncated
    /// or of another kind. The reason says what to do.
    #[error("the session store {} is damaged: {reason}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// An entry in the file could not be decoded (logged at start; the entry
    /// is left out).
    #[error("session store {}: {entry}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The entry: its client identifier and what it is.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Pending changes could not be written; they are kept and tried again
    /// at the next commit.
    #[error("cannot write to the session store {}: {reason}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The database and the changes not written yet.
#[derive(Debug)]
pub struct SessionStore {
    file: DbFile,
    /// Changes staged and not written yet.
    pending: SessionWrites,
    /// Clients whose entries are left without their session's own record:
    /// deleted at the first commit.
    orphans: Vec<String>,
}

impl SessionStore {
    /// Opens or creates the database at `path` and reads every session; see
    /// [`SessionStore::load`].
    ///
    /// # Errors
    ///
    /// [`SessionStoreError::Open`] when the file cannot be opened or
    /// created, [`SessionStoreError::Damaged`] when it is not a database
    /// this broker can read.
    pub fn open(path: &Path) -> Result<(SessionStore, Vec<SessionRecord>), SessionStoreError> {
        let file = DbFile::open(path).map_err(|e| file_error(path, e))?;
        SessionStore::load(file)
    }

    /// Reads every session of the open database `file`. An entry that
    /// cannot be decoded, or whose checksum is wrong, is logged and left
    /// out.
    ///
    /// # Errors
    ///
    /// [`SessionStoreError::Damaged`] when it is not a database this broker
    /// can read.
    pub fn load(file: DbFile) -> Result<(SessionStore, Vec<SessionRecord>), SessionStoreError> {
        let path = file.path().to_owned();
        let report = |entry: String, reason: String| {
            let error = SessionStoreError::Corrupt {
                path: path.clone(),
                entry,
                reason,
            };
            tracing::error!("{error}; the entry is not loaded");
        };
        let (records, orphans) =
            disk::guarded(|| read_sessions(&file, &report)).map_err(|e| file_error(&path, e))?;
        if !orphans.is_empty() {
            tracing::warn!(
                path = %path.display(),
                clients = orphans.len(),
                "session store: entries of sessions without their own record are deleted"
            );
        }
        let store = SessionStore {
            file,
            pending: SessionWrites::default(),
            orphans,
        };
        Ok((store, records))
    }

    /// Adds `writes` to the changes waiting for [`commit`](Self::commit).
    pub fn stage(&mut self, writes: SessionWrites) {
        self.pending.merge(writes);
    }

    /// Writes every pending change in one durable transaction; a no-op with
    /// nothing pending.
    ///
    /// # Errors
    ///
    /// When the write fails; the changes stay pending and are tried again
    /// at the next commit.
    pub fn commit(&mut self) -> Result<(), SessionStoreError> {
        if self.pending.is_empty() && self.orphans.is_empty() {
            return Ok(());
        }
        self.file
            .write(|txn| write(txn, &self.orphans, &self.pending))
            .map_err(|reason| SessionStoreError::Write {
                path: self.file.path().to_owned(),
                reason,
            })?;
        self.pending.clear();
        self.orphans.clear();
        Ok(())
    }
}

/// The store's error for a file it cannot use.
fn file_error(path: &Path, error: FileError) -> SessionStoreError {
    match error {
        FileError::Open(reason) => SessionStoreError::Open {
            path: path.to_owned(),
            reason,
        },
        FileError::Damaged(reason) => SessionStoreError::Damaged {
            path: path.to_owned(),
            reason: format!("{reason}; {DAMAGED_HINT}"),
        },
    }
}

/// The tables, open in one write transaction.
struct Tables<'t> {
    sessions: Table<'t, &'static str, &'static [u8]>,
    subscriptions: Table<'t, (&'static str, &'static str), &'static [u8]>,
    incoming: Table<'t, (&'static str, u16), ()>,
    inflight: Table<'t, (&'static str, u16), &'static [u8]>,
    queue: Table<'t, (&'static str, u64), &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Tables {
            sessions: txn.open_table(SESSIONS)?,
            subscriptions: txn.open_table(SUBSCRIPTIONS)?,
            incoming: txn.open_table(INCOMING)?,
            inflight: txn.open_table(INFLIGHT)?,
            queue: txn.open_table(QUEUE)?,
        })
    }

    /// Deletes everything stored for `client`.
    fn clear(&mut self, client: &str) -> Result<(), redb::StorageError> {
        self.sessions.remove(client)?;
        // Every filter of `client` sorts before `client` followed by a NUL
        // and the empty filter, and after `client` and the empty filter.
        let next = format!("{client}\0");
        self.subscriptions
            .retain_in((client, "")..(next.as_str(), ""), |_, _| false)?;
        self.incoming
            .retain_in((client, 0)..=(client, u16::MAX), |_, _| false)?;
        self.inflight
            .retain_in((client, 0)..=(client, u16::MAX), |_, _| false)?;
        self.queue
            .retain_in((client, 0)..=(client, u64::MAX), |_, _| false)?;
        Ok(())
    }
}

/// Writes `orphans`' deletions and `writes` in `txn`.
fn write(txn: &WriteTransaction, orphans: &[String], writes: &SessionWrites) -> Result<(), String> {
    let mut tables = Tables::open(txn).map_err(|e| e.to_string())?;
    let storage = |e: redb::StorageError| e.to_string();
    for client in orphans {
        tables.clear(client).map_err(storage)?;
    }
    let mut value = BytesMut::new();
    for changes in writes.iter() {
        let client = changes.client_id.as_str();
        if changes.clear {
            tables.clear(client).map_err(storage)?;
        }
        if let Some(meta) = &changes.meta {
            value.clear();
            encode_meta(client, meta, &mut value);
            tables
                .sessions
                .insert(client, &value[..])
                .map_err(storage)?;
        }
        for (filter, options) in &changes.subscriptions {
            let key = (client, filter.as_str());
            match options {
                Some(options) => {
                    value.clear();
                    encode_subscription(key, options, &mut value);
                    tables
                        .subscriptions
                        .insert(key, &value[..])
                        .map_err(storage)?;
                }
                None => {
                    tables.subscriptions.remove(key).map_err(storage)?;
                }
            }
        }
        for (&pkid, &held) in &changes.incoming {
            if held {
                tables
                    .incoming
                    .insert((client, pkid), ())
                    .map_err(storage)?;
            } else {
                tables.incoming.remove((client, pkid)).map_err(storage)?;
            }
        }
        // A message rumqttc cannot encode is left out (logged) rather than
        // failing every write from now on; it stays in memory.
        for (&pkid, inflight) in &changes.inflight {
            value.clear();
            let encoded = inflight
                .as_ref()
                .map(|inflight| encode_inflight((client, pkid), inflight, &mut value));
            match encoded {
                Some(Ok(())) => {
                    tables
                        .inflight
                        .insert((client, pkid), &value[..])
                        .map_err(storage)?;
                }
                Some(Err(reason)) => {
                    tracing::error!(client, pkid, "message in flight not stored: {reason}");
                    tables.inflight.remove((client, pkid)).map_err(storage)?;
                }
                None => {
                    tables.inflight.remove((client, pkid)).map_err(storage)?;
                }
            }
        }
        for (&seq, queued) in &changes.queue {
            match queued {
                Some(queued) => {
                    value.clear();
                    match encode_queued((client, seq), queued, &mut value) {
                        Ok(()) => {
                            tables
                                .queue
                                .insert((client, seq), &value[..])
                                .map_err(storage)?;
                        }
                        Err(reason) => {
                            tracing::error!(client, seq, "queued message not stored: {reason}");
                        }
                    }
                }
                None => {
                    tables.queue.remove((client, seq)).map_err(storage)?;
                }
            }
        }
    }
    Ok(())
}

/// A session's entries as read, before its own record is found.
#[derive(Default)]
struct Parts {
    subscriptions: Vec<(String, SubOptions)>,
    incoming: Vec<u16>,
    inflight: Vec<StoredInflight>,
    queue: Vec<(u64, StoredQueued)>,
    damaged: bool,
}

/// Every session in the file, and the clients whose entries have no
/// session record; entries that cannot be decoded go to `report` (the
/// entry, why) and are left out. Without the guard against panics.
fn read_sessions(
    file: &DbFile,
    report: &dyn Fn(String, String),
) -> Result<(Vec<SessionRecord>, Vec<String>), FileError> {
    let db = file.db();
    let read_error = |e: &dyn std::fmt::Display| FileError::Damaged(e.to_string());
    // Create the tables on a new file, so that reading never has to tell
    // "no table" from other errors.
    let setup = db.begin_write().map_err(|e| read_error(&e))?;
    Tables::open(&setup).map_err(|e| read_error(&e))?;
    setup.commit().map_err(|e| read_error(&e))?;

    let read = db.begin_read().map_err(|e| read_error(&e))?;
    let mut parts: BTreeMap<String, Parts> = BTreeMap::new();

    let table = read.open_table(SUBSCRIPTIONS).map_err(|e| read_error(&e))?;
    for entry in table.iter().map_err(|e| read_error(&e))? {
        let (key, value) = entry.map_err(|e| read_error(&e))?;
        let (client, filter) = key.value();
        let part = parts.entry(client.to_owned()).or_default();
        match decode_subscription((client, filter), value.value()) {
            Ok(options) => part.subscriptions.push((filter.to_owned(), options)),
            Err(reason) => {
                part.damaged = true;
                report(
                    format!("client {client:?}, subscription {filter:?}"),
                    reason,
                );
            }
        }
    }

    let table = read.open_table(INCOMING).map_err(|e| read_error(&e))?;
    for entry in table.iter().map_err(|e| read_error(&e))? {
        let (key, _) = entry.map_err(|e| read_error(&e))?;
        let (client, pkid) = key.value();
        parts
            .entry(client.to_owned())
            .or_default()
            .incoming
            .push(pkid);
    }

    let table = read.open_table(INFLIGHT).map_err(|e| read_error(&e))?;
    for entry in table.iter().map_err(|e| read_error(&e))? {
        let (key, value) = entry.map_err(|e| read_error(&e))?;
        let (client, pkid) = key.value();
        let part = parts.entry(client.to_owned()).or_default();
        match decode_inflight((client, pkid), value.value()) {
            Ok(inflight) => part.inflight.push(inflight),
            Err(reason) => {
                part.damaged = true;
                report(format!("client {client:?}, in flight {pkid}"), reason);
            }
        }
    }

    let table = read.open_table(QUEUE).map_err(|e| read_error(&e))?;
    for entry in table.iter().map_err(|e| read_error(&e))? {
        let (key, value) = entry.map_err(|e| read_error(&e))?;
        let (client, seq) = key.value();
        let part = parts.entry(client.to_owned()).or_default();
        match decode_queued((client, seq), value.value()) {
            Ok(queued) => part.queue.push((seq, queued)),
            Err(reason) => {
                part.damaged = true;
                report(format!("client {client:?}, queued message {seq}"), reason);
            }
        }
    }

    let mut records = Vec::new();
    let mut known = BTreeSet::new();
    let table = read.open_table(SESSIONS).map_err(|e| read_error(&e))?;
    for entry in table.iter().map_err(|e| read_error(&e))? {
        let (key, value) = entry.map_err(|e| read_error(&e))?;
        let client = key.value();
        known.insert(client.to_owned());
        let meta = match decode_meta(client, value.value()) {
            Ok(meta) => meta,
            Err(reason) => {
                // Without its own record the session cannot be resumed:
                // its entries go too.
                report(format!("client {client:?}, session"), reason);
                known.remove(client);
                continue;
            }
        };
        let mut part = parts.remove(client).unwrap_or_default();
        part.inflight.sort_by_key(|i| i.order);
        records.push(SessionRecord {
            client_id: client.to_owned(),
            meta,
            subscriptions: part.subscriptions,
            incoming: part.incoming,
            inflight: part.inflight,
            queue: part.queue,
            damaged: part.damaged,
        });
    }
    // Entries whose session record is gone or unreadable.
    let orphans = parts.into_keys().filter(|c| !known.contains(c)).collect();
    Ok((records, orphans))
}

/// Appends a value to `out` (which must be empty): the version, room for
/// the checksum, the fields `fields` writes, then the checksum of `key`
/// and the fields.
fn seal(
    key: &[&[u8]],
    out: &mut BytesMut,
    fields: impl FnOnce(&mut BytesMut) -> Result<(), String>,
) -> Result<(), String> {
    out.extend_from_slice(&[VERSION, 0, 0, 0, 0]);
    fields(out)?;
    let crc = disk::checksum(key, &out[PREFIX..]);
    out[1..PREFIX].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The fields of a value written by [`seal`] under `key`, checked.
fn unseal<'v>(key: &[&[u8]], value: &'v [u8]) -> Result<Fields<'v>, String> {
    let Some(&version) = value.first() else {
        return Err("empty value".to_owned());
    };
    if version != VERSION {
        return Err(format!(
            "format version {version}, this broker reads version {VERSION}"
        ));
    }
    let stored = value
        .get(1..PREFIX)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or("value shorter than its header")?;
    let fields = &value[PREFIX..];
    if disk::checksum(key, fields) != stored {
        return Err("checksum mismatch: the stored value was changed or damaged".to_owned());
    }
    Ok(Fields(fields))
}

/// The fields of a value, read front to back.
struct Fields<'v>(&'v [u8]);

impl<'v> Fields<'v> {
    fn take(&mut self, n: usize) -> Result<&'v [u8], String> {
        if self.0.len() < n {
            return Err("value shorter than its fields".to_owned());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(bytes))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(bytes))
    }

    fn time(&mut self) -> Result<Option<SystemTime>, String> {
        let has = self.u8()?;
        let millis = self.u64()?;
        Ok((has != 0).then(|| UNIX_EPOCH + Duration::from_millis(millis)))
    }

    /// What [`put_filters`] wrote.
    fn filters(&mut self) -> Result<Vec<TopicFilter>, String> {
        let count = self.u32()?;
        let mut filters = Vec::new();
        for _ in 0..count {
            let len = self.u16()?;
            let bytes = self.take(usize::from(len))?;
            let text = std::str::from_utf8(bytes).map_err(|e| format!("topic filter: {e}"))?;
            let filter = TopicFilter::try_from(text.to_owned())
                .map_err(|e| format!("topic filter {text:?}: {e}"))?;
            filters.push(filter);
        }
        Ok(filters)
    }

    fn qos(&mut self) -> Result<QoS, String> {
        match self.u8()? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            other => Err(format!("QoS {other}")),
        }
    }

    fn rest(self) -> &'v [u8] {
        self.0
    }

    fn end(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("bytes after the value's fields".to_owned())
        }
    }
}

/// Shared subscription filters: a count, then each filter's length and
/// bytes.
fn put_filters(out: &mut BytesMut, filters: &[TopicFilter]) -> Result<(), String> {
    let count = u32::try_from(filters.len()).map_err(|_| "too many shared subscriptions")?;
    out.extend_from_slice(&count.to_be_bytes());
    for filter in filters {
        // A topic filter is at most 65,535 bytes.
        let len = u16::try_from(filter.as_str().len()).map_err(|_| "topic filter too long")?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(filter.as_str().as_bytes());
    }
    Ok(())
}

fn put_time(out: &mut BytesMut, time: Option<SystemTime>) {
    let millis = time.map_or(0, |t| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    });
    out.extend_from_slice(&[u8::from(time.is_some())]);
    out.extend_from_slice(&millis.to_be_bytes());
}

fn encode_meta(client: &str, meta: &SessionMeta, out: &mut BytesMut) {
    let sealed = seal(&[client.as_bytes()], out, |out| {
        out.extend_from_slice(&[meta.version.level()]);
        out.extend_from_slice(&meta.expiry_interval.to_be_bytes());
        put_time(out, meta.disconnected_at);
        out.extend_from_slice(&meta.last_pkid.to_be_bytes());
        match &meta.username {
            // A CONNECT's user name is at most 65,535 bytes.
            Some(name) if name.len() <= usize::from(u16::MAX) => {
                out.extend_from_slice(&[1]);
                out.extend_from_slice(&(name.len() as u16).to_be_bytes());
                out.extend_from_slice(name.as_bytes());
            }
            _ => out.extend_from_slice(&[0]),
        }
        Ok(())
    });
    debug_assert!(sealed.is_ok(), "the fields of a session never fail");
}

fn decode_meta(client: &str, value: &[u8]) -> Result<SessionMeta, String> {
    let mut fields = unseal(&[client.as_bytes()], value)?;
    let level = fields.u8()?;
    let version =
        MqttVersion::from_level(level).ok_or_else(|| format!("protocol level {level}"))?;
    let expiry_interval = fields.u32()?;
    let disconnected_at = fields.time()?;
    let last_pkid = fields.u16()?;
    let username = match fields.u8()? {
        0 => None,
        _ => {
            let len = fields.u16()?;
            let name = fields.take(usize::from(len))?;
            Some(String::from_utf8(name.to_vec()).map_err(|_| "user name not UTF-8".to_owned())?)
        }
    };
    fields.end()?;
    Ok(SessionMeta {
        version,
        expiry_interval,
        disconnected_at,
        last_pkid,
        username,
    })
}

fn encode_subscription((client, filter): (&str, &str), options: &SubOptions, out: &mut BytesMut) {
    let sealed = seal(&[client.as_bytes(), filter.as_bytes()], out, |out| {
        let flags = u8::from(options.no_local) | u8::from(options.retain_as_published) << 1;
        let handling = match options.retain_handling {
            RetainForwardRule::OnEverySubscribe => 0,
            RetainForwardRule::OnNewSubscribe => 1,
            RetainForwardRule::Never => 2,
        };
        out.extend_from_slice(&[options.qos as u8, flags, handling]);
        // A Subscription Identifier is at most 268,435,455.
        let id = options
            .subscription_id
            .and_then(|id| u32::try_from(id).ok());
        out.extend_from_slice(&[u8::from(id.is_some())]);
        out.extend_from_slice(&id.unwrap_or(0).to_be_bytes());
        Ok(())
    });
    debug_assert!(sealed.is_ok(), "the fields of a subscription never fail");
}

fn decode_subscription((client, filter): (&str, &str), value: &[u8]) -> Result<SubOptions, String> {
    let mut fields = unseal(&[client.as_bytes(), filter.as_bytes()], value)?;
    let qos = fields.qos()?;
    let flags = fields.u8()?;
    let retain_handling = match fields.u8()? {
        0 => RetainForwardRule::OnEverySubscribe,
        1 => RetainForwardRule::OnNewSubscribe,
        2 => RetainForwardRule::Never,
        other => return Err(format!("retain handling {other}")),
    };
    let has_id = fields.u8()?;
    let id = fields.u32()?;
    fields.end()?;
    Ok(SubOptions {
        qos,
        no_local: flags & 1 != 0,
        retain_as_published: flags & 2 != 0,
        retain_handling,
        subscription_id: (has_id != 0).then_some(id as usize),
    })
}

/// What follows the order of a message in flight.
const KIND_PUBLISH: u8 = 0;
const KIND_RELEASE: u8 = 1;

fn encode_inflight(
    (client, pkid): (&str, u16),
    stored: &StoredInflight,
    out: &mut BytesMut,
) -> Result<(), String> {
    seal(&[client.as_bytes(), &pkid.to_be_bytes()], out, |out| {
        out.extend_from_slice(&stored.order.to_be_bytes());
        match &stored.inflight {
            Inflight::Publish(publish, shared) => {
                out.extend_from_slice(&[KIND_PUBLISH, u8::from(shared.is_some())]);
                if let Some(shared) = shared {
                    put_filters(out, &shared.filters)?;
                    put_time(out, stored.shared_expires);
                    let mut message = BytesMut::new();
                    disk::write_publish(&shared.message.publish, &mut message)?;
                    let len = u32::try_from(message.len()).map_err(|_| "message too large")?;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&message);
                }
                disk::write_publish(publish, out)
            }
            Inflight::Release(_) => {
                out.extend_from_slice(&[KIND_RELEASE]);
                Ok(())
            }
        }
    })
}

fn decode_inflight((client, pkid): (&str, u16), value: &[u8]) -> Result<StoredInflight, String> {
    let mut fields = unseal(&[client.as_bytes(), &pkid.to_be_bytes()], value)?;
    let order = fields.u64()?;
    let mut shared_expires = None;
    let inflight = match fields.u8()? {
        KIND_PUBLISH => {
            let shared = match fields.u8()? {
                0 => None,
                _ => {
                    let filters = fields.filters()?;
                    shared_expires = fields.time()?;
                    let len = fields.u32()?;
                    let message = fields.take(usize::try_from(len).unwrap_or(usize::MAX))?;
                    let mut publish = disk::read_publish(message)?;
                    // As published: no packet identifier of its own.
                    publish.pkid = 0;
                    Some(Box::new(SharedDelivery {
                        message: Arc::new(Message {
                            publish,
                            expires_at: None,
                        }),
                        filters,
                    }))
                }
            };
            let publish = disk::read_publish(fields.rest())?;
            if publish.pkid != pkid || publish.qos == QoS::AtMostOnce {
                return Err("the PUBLISH's packet identifier differs from the key".to_owned());
            }
            Inflight::Publish(publish, shared)
        }
        KIND_RELEASE => {
            fields.end()?;
            Inflight::Release(pkid)
        }
        other => return Err(format!("kind {other}")),
    };
    Ok(StoredInflight {
        order,
        inflight,
        shared_expires,
    })
}

fn encode_queued(
    (client, seq): (&str, u64),
    stored: &StoredQueued,
    out: &mut BytesMut,
) -> Result<(), String> {
    seal(&[client.as_bytes(), &seq.to_be_bytes()], out, |out| {
        let queued = &stored.queued;
        let flags = u8::from(queued.retain) | u8::from(queued.from_retained) << 1;
        out.extend_from_slice(&[queued.qos as u8, flags]);
        put_time(out, stored.expires);
        let ids: Vec<u32> = queued
            .subscription_ids
            .iter()
            .filter_map(|&id| u32::try_from(id).ok())
            .collect();
        let count = u32::try_from(ids.len()).map_err(|_| "too many subscription identifiers")?;
        out.extend_from_slice(&count.to_be_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
        put_filters(out, &queued.shared)?;
        disk::write_publish(&queued.message.publish, out)
    })
}

fn decode_queued((client, seq): (&str, u64), value: &[u8]) -> Result<StoredQueued, String> {
    let mut fields = unseal(&[client.as_bytes(), &seq.to_be_bytes()], value)?;
    let qos = fields.qos()?;
    let flags = fields.u8()?;
    let expires = fields.time()?;
    let count = fields.u32()?;
    // Each identifier takes four bytes: a count beyond what the value holds
    // fails here, before anything is allocated for it.
    let ids = fields.take(
        usize::try_from(count)
            .unwrap_or(usize::MAX)
            .saturating_mul(4),
    )?;
    let subscription_ids = ids
        .chunks_exact(4)
        .map(|id| u32::from_be_bytes([id[0], id[1], id[2], id[3]]) as usize)
        .collect();
    let shared = fields.filters()?;
    let mut publish = disk::read_publish(fields.rest())?;
    publish.pkid = 0;
    Ok(StoredQueued {
        queued: Queued {
            message: Arc::new(Message {
                publish,
                expires_at: None,
            }),
            qos,
            retain: flags & 1 != 0,
            subscription_ids,
            from_retained: flags & 2 != 0,
            shared,
        },
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::stored::SessionChanges;
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};

    /// A fresh database path under the system temporary directory.
    fn temp_path(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "host-shim-sessions-{name}-{}-{:?}.redb",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        path
    }

    fn meta() -> SessionMeta {
        SessionMeta {
            version: MqttVersion::V5,
            expiry_interval: 60,
            disconnected_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            last_pkid: 7,
            username: Some("u".into()),
        }
    }

    fn options(id: Option<usize>) -> SubOptions {
        SubOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: false,
            retain_handling: RetainForwardRule::Never,
            subscription_id: id,
        }
    }

    fn queued(payload: &'static [u8]) -> StoredQueued {
        let props = PublishProperties {
            content_type: Some("text/plain".into()),
            ..PublishProperties::default()
        };
        let mut publish = Publish::new(
            "a/b",
            QoS::ExactlyOnce,
            Bytes::from_static(payload),
            Some(props),
        );
        publish.retain = true;
        StoredQueued {
            queued: Queued {
                message: Arc::new(Message {
                    publish,
                    expires_at: None,
                }),
                qos: QoS::AtLeastOnce,
                retain: true,
                subscription_ids: vec![3, 268_435_455],
                from_retained: false,
                shared: vec!["$share/g/a/b".parse().unwrap()],
            },
            expires: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        }
    }

    #[test]
    fn values_round_trip_and_checksums_catch_changes() {
        let mut out = BytesMut::new();
        encode_meta("c", &meta(), &mut out);
        assert_eq!(decode_meta("c", &out).unwrap(), meta());
        assert!(decode_meta("d", &out).unwrap_err().contains("checksum"));
        let last = out.len() - 1;
        out[last] ^= 1;
        assert!(decode_meta("c", &out).unwrap_err().contains("checksum"));
        assert!(decode_meta("c", &[]).is_err());
        assert!(decode_meta("c", &[1, 0]).is_err());
        assert!(decode_meta("c", &[9, 0, 0, 0, 0])
            .unwrap_err()
            .contains("version 9"));

        out.clear();
        encode_subscription(("c", "$share/g/a/#"), &options(Some(9)), &mut out);
        assert_eq!(
            decode_subscription(("c", "$share/g/a/#"), &out).unwrap(),
            options(Some(9))
        );
        assert!(decode_subscription(("c", "a/#"), &out).is_err());

        out.clear();
        let mut publish = Publish::new("t", QoS::AtLeastOnce, Bytes::from_static(b"x"), None);
        publish.pkid = 5;
        let stored = StoredInflight {
            order: 12,
            inflight: Inflight::Publish(publish.clone(), None),
            shared_expires: None,
        };
        encode_inflight(("c", 5), &stored, &mut out).unwrap();
        assert_eq!(decode_inflight(("c", 5), &out).unwrap(), stored);
        assert!(decode_inflight(("c", 6), &out).is_err());
        // With what a shared subscription's hand-over needs.
        out.clear();
        let original = Publish::new("t", QoS::ExactlyOnce, Bytes::from_static(b"x"), None);
        let shared = StoredInflight {
            order: 12,
            inflight: Inflight::Publish(
                publish,
                Some(Box::new(SharedDelivery {
                    message: Arc::new(Message {
                        publish: original,
                        expires_at: None,
                    }),
                    filters: vec!["$share/g/t".parse().unwrap(), "$share/h/#".parse().unwrap()],
                })),
            ),
            shared_expires: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        };
        encode_inflight(("c", 5), &shared, &mut out).unwrap();
        assert_eq!(decode_inflight(("c", 5), &out).unwrap(), shared);
        out.clear();
        let release = StoredInflight {
            order: 13,
            inflight: Inflight::Release(6),
            shared_expires: None,
        };
        encode_inflight(("c", 6), &release, &mut out).unwrap();
        assert_eq!(decode_inflight(("c", 6), &out).unwrap(), release);

        out.clear();
        let message = queued(b"payload");
        encode_queued(("c", 40), &message, &mut out).unwrap();
        let back = decode_queued(("c", 40), &out).unwrap();
        assert_eq!(back.expires, message.expires);
        assert_eq!(back.queued.qos, QoS::AtLeastOnce);
        assert!(back.queued.retain && !back.queued.from_retained);
        assert_eq!(back.queued.subscription_ids, vec![3, 268_435_455]);
        assert_eq!(back.queued.shared, message.queued.shared);
        assert_eq!(back.queued.message.publish, message.queued.message.publish);
        // A count of identifiers beyond the value fails, never allocates.
        let mut huge = out.clone();
        huge[PREFIX + 11..PREFIX + 15].copy_from_slice(&u32::MAX.to_be_bytes());
        let crc = disk::checksum(&[b"c", &40u64.to_be_bytes()], &huge[PREFIX..]);
        huge[1..PREFIX].copy_from_slice(&crc.to_be_bytes());
        assert!(decode_queued(("c", 40), &huge).is_err());
    }

    #[test]
    fn writes_are_incremental_and_clears_delete_one_client() {
        let path = temp_path("incremental");
        {
            let (mut store, loaded) = SessionStore::open(&path).unwrap();
            assert!(loaded.is_empty());
            let mut writes = SessionWrites::default();
            for (id, client) in [(1, "c"), (2, "c2"), (3, "b")] {
                let changes = writes.changes(id, client);
                changes.clear = true;
                changes.meta = Some(meta());
                changes
                    .subscriptions
                    .insert("a/#".into(), Some(options(None)));
                changes.incoming.insert(4, true);
                changes.queue.insert(0, Some(queued(b"0")));
                changes.queue.insert(1, Some(queued(b"1")));
            }
            store.stage(writes);
            store.commit().unwrap();

            let mut writes = SessionWrites::default();
            let changes = writes.changes(1, "c");
            changes.dequeue(0);
            changes.queue.insert(2, Some(queued(b"2")));
            changes.dequeue(2);
            changes.incoming.insert(4, false);
            writes.changes(2, "c2").clear();
            store.stage(writes);
            store.commit().unwrap();
        }
        let (_, loaded) = SessionStore::open(&path).unwrap();
        let clients: Vec<&str> = loaded.iter().map(|r| r.client_id.as_str()).collect();
        assert_eq!(
            clients,
            ["b", "c"],
            "c2 cleared, and a client that only shares a prefix kept"
        );
        let c = &loaded[1];
        assert_eq!(c.meta, meta());
        assert!(c.incoming.is_empty());
        let seqs: Vec<u64> = c.queue.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1]);
        assert_eq!(c.subscriptions, [("a/#".to_owned(), options(None))]);
        assert!(!c.damaged);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn pending_merges_keep_the_latest_state() {
        let mut earlier = SessionWrites::default();
        earlier.changes(1, "c").queue.insert(0, Some(queued(b"0")));
        earlier.changes(1, "c").inflight.insert(3, None);
        let mut later = SessionWrites::default();
        later.changes(1, "c").dequeue(0);
        later.changes(1, "c").dequeue(1);
        earlier.merge(later);
        let changes: Vec<&SessionChanges> = earlier.iter().collect();
        assert_eq!(changes[0].queue.len(), 1, "0 never written, 1 deleted");
        assert!(changes[0].queue[&1].is_none());
        let mut ended = SessionWrites::default();
        ended.changes(1, "c").clear();
        earlier.merge(ended);
        let changes: Vec<&SessionChanges> = earlier.iter().collect();
        assert!(changes[0].clear && changes[0].inflight.is_empty());
    }

    #[test]
    fn damaged_entries_are_left_out_and_orphans_deleted() {
        let path = temp_path("damaged");
        {
            let (mut store, _) = SessionStore::open(&path).unwrap();
            let mut writes = SessionWrites::default();
            let changes = writes.changes(1, "c");
            changes.meta = Some(meta());
            changes.queue.insert(0, Some(queued(b"0")));
            changes.queue.insert(1, Some(queued(b"1")));
            writes
                .changes(2, "orphan")
                .queue
                .insert(0, Some(queued(b"x")));
            store.stage(writes);
            store.commit().unwrap();
            // One byte changed behind the store's back.
            let txn = store.file.db().begin_write().unwrap();
            {
                let mut table = txn.open_table(QUEUE).unwrap();
                let mut value = table.get(("c", 1)).unwrap().unwrap().value().to_vec();
                let last = value.len() - 1;
                value[last] ^= 1;
                table.insert(("c", 1), &value[..]).unwrap();
            }
            txn.commit().unwrap();
        }
        let (mut store, loaded) = SessionStore::open(&path).unwrap();
        assert_eq!(loaded.len(), 1);
        assert!(loaded[0].damaged);
        assert_eq!(loaded[0].queue.len(), 1);
        assert_eq!(store.orphans, ["orphan"]);
        store.commit().unwrap();
        drop(store);
        let (store, _) = SessionStore::open(&path).unwrap();
        assert!(
            store.orphans.is_empty(),
            "orphans deleted at the first commit"
        );
        drop(store);

        std::fs::write(&path, b"not a database").unwrap();
        let err = SessionStore::open(&path).unwrap_err();
        assert!(matches!(err, SessionStoreError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("move it away"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
