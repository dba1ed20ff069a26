//! Bounded waits: a broken broker makes a test fail, never hang.

use anyhow::{anyhow, Result};
use std::future::Future;
use std::time::Duration;

/// Upper bound for anything that should happen promptly. Generous: it is a
/// failure deadline, not a speed expectation.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long we watch for something that must NOT happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// Awaits `fut` for at most [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T> {
    within_for(WAIT, what, fut).await
}

/// Awaits `fut` for at most `limit`.
pub async fn within_for<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow!("timed out after {limit:?} waiting for {what}"))
}
