//! Log lines for events a client can cause at will (a dropped message, a
//! closed connection) are rate-limited, so a flood of events is not a flood
//! of log: at most one line per [`LOG_INTERVAL`] for each kind of event,
//! saying how many were left out since the last. Every event is still
//! counted in the broker's counters.

use std::time::{Duration, Instant};

/// The shortest time between two lines of one [`LogLimit`].
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of event's log lines.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// Calls `log` with the number of lines left out since the last one,
    /// unless the last line was less than [`LOG_INTERVAL`] before `now`.
    pub(crate) fn log(&mut self, now: Instant, log: impl FnOnce(u64)) {
        if self.last.is_some_and(|last| now < last + LOG_INTERVAL) {
            self.suppressed += 1;
            return;
        }
        self.last = Some(now);
        log(std::mem::take(&mut self.suppressed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let start = Instant::now();
        let mut limit = LogLimit::default();
        let mut lines = Vec::new();
        for ms in [0, 1, 2, 9_999, 10_000, 10_001, 25_000] {
            let now = start + Duration::from_millis(ms);
            limit.log(now, |suppressed| lines.push((ms, suppressed)));
        }
        assert_eq!(lines, [(0, 0), (10_000, 3), (25_000, 1)]);
    }
}
