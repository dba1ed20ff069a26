//! What the stores on disk share: the [`redb`] database file they open (one
//! database per file, so `retain.storage` and `sessions.storage` may name
//! the same file), the guard that turns a panic of redb on a damaged file
//! into an error, the checksum of stored values, and PUBLISH packets as
//! stored.

use bytes::BytesMut;
use redb::{Database, WriteTransaction};
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a database file cannot be used; each store words it as its own
/// error, with its own advice.
#[derive(Debug)]
pub(crate) enum FileError {
    /// The file cannot be opened or created (missing directory, no
    /// permission, held by another process): the file is not the problem.
    Open(String),
    /// The file is not a database this broker can read.
    Damaged(String),
}

/// An open database file. Clones share the one database, so two stores
/// naming the same file use it together.
#[derive(Clone)]
pub(crate) struct DbFile {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for DbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbFile").field("path", &self.path).finish()
    }
}

impl DbFile {
    /// Opens or creates the database at `path`.
    ///
    /// # Errors
    ///
    /// [`FileError::Open`] when the file cannot be opened or created,
    /// [`FileError::Damaged`] when it exists and is not a database redb can
    /// open.
    pub(crate) fn open(path: &Path) -> Result<DbFile, FileError> {
        let existed = path.exists();
        let db = guarded(|| {
            Database::create(path).map_err(|e| match e {
                // Bytes that are not a database: the file is the problem.
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if existed && io.kind() == std::io::ErrorKind::InvalidData =>
                {
                    FileError::Damaged(io.to_string())
                }
                // Held by another process, no permission, no such
                // directory: the file is not the problem.
                redb::DatabaseError::DatabaseAlreadyOpen
                | redb::DatabaseError::Storage(redb::StorageError::Io(_)) => {
                    FileError::Open(e.to_string())
                }
                other if existed => FileError::Damaged(other.to_string()),
                other => FileError::Open(other.to_string()),
            })
        })?;
        Ok(DbFile {
            db: Arc::new(db),
            path: path.to_owned(),
        })
    }

    /// The database.
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Runs `write` in one durable write transaction and commits it.
    ///
    /// # Errors
    ///
    /// Why a step failed (nothing is committed then).
    pub(crate) fn write(
        &self,
        write: impl FnOnce(&WriteTransaction) -> Result<(), String>,
    ) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        write(&txn)?;
        txn.commit().map_err(|e| e.to_string())
    }

    /// The file's path, as configured.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `path` names this file: the same path, or one that resolves
    /// to it.
    pub(crate) fn is_at(&self, path: &Path) -> bool {
        self.path == path
            || matches!(
                (self.path.canonicalize(), path.canonicalize()),
                (Ok(a), Ok(b)) if a == b
            )
    }
}

/// Runs `read`, which reads a database file: redb panics on some damaged
/// files (a truncated one, for one) instead of returning an error, so a
/// panic here is a damaged file.
pub(crate) fn guarded<T>(read: impl FnOnce() -> Result<T, FileError>) -> Result<T, FileError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the database library panicked");
            Err(FileError::Damaged(reason.to_owned()))
        }
    }
}

/// The CRC-32 (IEEE) of a stored value: its key's parts (so that a value
/// under another key is caught too), then its fields.
pub(crate) fn checksum(key: &[&[u8]], fields: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in key {
        hasher.update(part);
    }
    hasher.update(fields);
    hasher.finalize()
}

/// Appends `publish` to `out` as an MQTT 5.0 PUBLISH packet, written by
/// rumqttc, without DUP. The packet format needs an identifier for QoS 1
/// and 2: one without gets 1.
pub(crate) fn write_publish(publish: &Publish, out: &mut BytesMut) -> Result<(), String> {
    let mut publish = publish.clone();
    if publish.qos != QoS::AtMostOnce && publish.pkid == 0 {
        publish.pkid = 1;
    }
    publish.dup = false;
    publish
        .write(out)
        .map(drop)
        .map_err(|e| format!("cannot encode the message: {e:?}"))
}

/// Reads a PUBLISH packet written by [`write_publish`].
pub(crate) fn read_publish(packet: &[u8]) -> Result<Publish, String> {
    let mut packet = BytesMut::from(packet);
    match Packet::read(&mut packet, None) {
        Ok(Packet::Publish(publish)) => Ok(publish),
        Ok(other) => Err(format!("not a PUBLISH: {other:?}")),
        Err(e) => Err(format!("cannot decode the PUBLISH: {e:?}")),
    }
}
