//! The compiled-code cache: a component compiled once per machine, not once
//! per process.
//!
//! Compiling the connector with Cranelift takes most of a second of CPU, far
//! more than anything else a one-shot command does. The first load of a
//! component compiles it and writes the machine code to a file; later loads
//! read that file back, which takes milliseconds.
//!
//! # Files
//!
//! One file per component and engine, named after a hash of the component's
//! bytes and of everything in the engine that shapes the code (target, CPU
//! features, settings, the wasmtime version), so a file never answers for
//! another component or engine. Each file is written to a temporary name and
//! renamed, so it is whole or absent, and it carries a checksum of the code,
//! checked before the code is loaded: wasmtime trusts the machine code it
//! loads, so only a file this module wrote, intact, may reach it. At most
//! [`KEEP`] files are kept; the oldest go when a new one is written.
//!
//! Every cache failure (no directory, a read-only one, a corrupt or stale
//! file) is logged at debug level and ends in compiling: the cache can make
//! a load faster, never make it fail.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Start of every cache file: the format and its version.
const MAGIC: &[u8; 8] = b"hshimcw1";
/// Magic, CRC-32 of the code, length of the code.
const HEADER_LEN: usize = MAGIC.len() + 4 + 8;
/// Cache files kept at most (each is a few MiB).
pub const KEEP: usize = 8;
/// Extension of cache files.
const EXTENSION: &str = "cwasm";

/// Where a runtime's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOrigin {
    /// Compiled in this process.
    Compiled,
    /// Read from the cache.
    Cache,
}

/// A directory of compiled components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeCache {
    dir: PathBuf,
}

impl CodeCache {
    /// A cache in `dir`, created when first written to.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CodeCache { dir: dir.into() }
    }

    /// The user's cache: `$XDG_CACHE_HOME/host-shim`, else
    /// `$HOME/.cache/host-shim`; `None` when neither variable is set to an
    /// absolute path.
    pub fn user_default() -> Option<Self> {
        let absolute = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let base =
            absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".cache")))?;
        Some(CodeCache::new(base.join("host-shim")))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `wasm` compiled by `engine`.
    pub fn file_for(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        wasm.hash(&mut hasher);
        self.dir
            .join(format!("component-{:016x}.{EXTENSION}", hasher.finish()))
    }

    /// `wasm` compiled by `engine`: from the cache when it holds it, else
    /// compiled and written to the cache.
    ///
    /// # Errors
    ///
    /// Only when compiling fails; cache failures fall back to compiling.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<(Component, CodeOrigin)> {
        let path = self.file_for(engine, wasm);
        match read(engine, &path) {
            Ok(component) => {
                tracing::debug!(file = %path.display(), "component loaded from the code cache");
                return Ok((component, CodeOrigin::Cache));
            }
            Err(Miss::Absent) => {
                tracing::debug!(file = %path.display(), "component not in the code cache; compiling");
            }
            Err(Miss::Unusable(why)) => {
                tracing::debug!(
                    file = %path.display(),
                    "code cache file unusable ({why}); compiling and rewriting it"
                );
            }
        }
        let component = Component::new(engine, wasm)?;
        match component.serialize() {
            Ok(code) => {
                if let Err(e) = self.write(&path, &code) {
                    tracing::debug!(file = %path.display(), "cannot write the code cache: {e}");
                }
            }
            Err(e) => tracing::debug!("cannot serialize the compiled component: {e:#}"),
        }
        Ok((component, CodeOrigin::Compiled))
    }

    /// Writes `code` to `path` whole (a temporary file, then a rename), then
    /// removes the oldest files beyond [`KEEP`].
    fn write(&self, path: &Path, code: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(MAGIC)?;
            file.write_all(&crc32fast::hash(code).to_le_bytes())?;
            file.write_all(&(code.len() as u64).to_le_bytes())?;
            file.write_all(code)?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written?;
        self.prune(path);
        Ok(())
    }

    /// Removes the oldest cache files beyond [`KEEP`], never `keep`.
    fn prune(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION) && p != keep)
            .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
            .collect();
        if files.len() < KEEP {
            return;
        }
        files.sort();
        for (_, old) in &files[..files.len() + 1 - KEEP] {
            if let Err(e) = std::fs::remove_file(old) {
                tracing::debug!(file = %old.display(), "cannot remove an old code cache file: {e}");
            }
        }
    }
}

/// Why the cache could not answer.
enum Miss {
    /// No file.
    Absent,
    /// A file, but not one to load.
    Unusable(String),
}

/// The component in the cache file `path`, checked.
fn read(engine: &Engine, path: &Path) -> Result<Component, Miss> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
        Err(e) => return Err(Miss::Unusable(e.to_string())),
    };
    let code = checked_code(&bytes).map_err(|why| Miss::Unusable(why.to_owned()))?;
    // SAFETY: wasmtime runs the machine code it deserializes as it is. The
    // code is what `Component::serialize` produced in an earlier run, as the
    // checksum that `write` stored with it shows, and wasmtime checks that
    // it was made by this wasmtime version for this engine's configuration.
    unsafe { Component::deserialize(engine, code) }.map_err(|e| Miss::Unusable(format!("{e:#}")))
}

/// The code in a cache file's bytes, after checking the header and the
/// checksum.
fn checked_code(bytes: &[u8]) -> Result<&[u8], &'static str> {
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a code cache file");
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let code = &bytes[HEADER_LEN..];
    if code.len() as u64 != len {
        return Err("truncated");
    }
    if crc32fast::hash(code) != crc {
        return Err("checksum mismatch");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Limits, Runtime, EMBEDDED_COMPONENT};

    /// An empty directory of this test alone.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "host-shim-code-cache-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The connector component as a file, the way `--component` takes it.
    fn component_file(dir: &Path) -> PathBuf {
        let path = dir.join("connector.wasm");
        std::fs::write(&path, EMBEDDED_COMPONENT).unwrap();
        path
    }

    fn load(wasm: &Path, cache: &CodeCache) -> Runtime {
        Runtime::from_file_cached(wasm, Limits::default(), Some(cache)).unwrap()
    }

    fn cache_files(cache: &CodeCache) -> Vec<PathBuf> {
        std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
            .collect()
    }

    #[tokio::test]
    async fn the_second_load_reads_the_code_from_the_cache() {
        let dir = scratch("second");
        let wasm = component_file(&dir);
        let cache = CodeCache::new(dir.join("cache"));
        assert_eq!(load(&wasm, &cache).code_origin(), CodeOrigin::Compiled);
        assert_eq!(cache_files(&cache).len(), 1);
        let second = load(&wasm, &cache);
        assert_eq!(second.code_origin(), CodeOrigin::Cache);
        let metadata = second.describe().await.unwrap();
        assert_eq!(metadata.name, "mqtt");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_or_foreign_cache_file_is_compiled_again_and_rewritten() {
        let dir = scratch("corrupt");
        let wasm = component_file(&dir);
        let cache = CodeCache::new(dir.join("cache"));
        assert_eq!(load(&wasm, &cache).code_origin(), CodeOrigin::Compiled);
        let [file] = cache_files(&cache).try_into().unwrap();

        // A flipped bit: the checksum no longer matches.
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(load(&wasm, &cache).code_origin(), CodeOrigin::Compiled);
        assert_eq!(load(&wasm, &cache).code_origin(), CodeOrigin::Cache);

        // A whole file with a good checksum over code wasmtime did not make.
        let junk = b"not machine code".repeat(64);
        let mut forged = MAGIC.to_vec();
        forged.extend(crc32fast::hash(&junk).to_le_bytes());
        forged.extend((junk.len() as u64).to_le_bytes());
        forged.extend(&junk);
        std::fs::write(&file, &forged).unwrap();
        assert_eq!(load(&wasm, &cache).code_origin(), CodeOrigin::Compiled);
        assert_ne!(std::fs::read(&file).unwrap(), forged, "rewritten");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_cache_directory_that_cannot_be_made_only_means_compiling() {
        let dir = scratch("unwritable");
        let wasm = component_file(&dir);
        // A regular file where the directory would go: no user, not even
        // root, can create the cache under it.
        let blocker = dir.join("blocker");
        std::fs::write(&blocker, b"a file").unwrap();
        let cache = CodeCache::new(blocker.join("cache"));
        let runtime = load(&wasm, &cache);
        assert_eq!(runtime.code_origin(), CodeOrigin::Compiled);
        assert!(runtime.describe().await.is_ok());
        assert!(!cache.dir().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_whole_files_with_a_matching_checksum_pass() {
        let code = b"some code".to_vec();
        let mut file = MAGIC.to_vec();
        file.extend(crc32fast::hash(&code).to_le_bytes());
        file.extend((code.len() as u64).to_le_bytes());
        file.extend(&code);
        assert_eq!(checked_code(&file), Ok(&code[..]));
        assert_eq!(
            checked_code(&file[..file.len() - 1]),
            Err("truncated"),
            "one byte short"
        );
        let mut flipped = file.clone();
        flipped[HEADER_LEN] ^= 1;
        assert_eq!(checked_code(&flipped), Err("checksum mismatch"));
        let mut other = file.clone();
        other[0] = b'X';
        assert_eq!(checked_code(&other), Err("not a code cache file"));
        assert_eq!(checked_code(b"short"), Err("not a code cache file"));
    }
}
