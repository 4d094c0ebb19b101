//! systemd integration: readiness, status and watchdog notifications (`sd_notify`).
//!
//! The unit (`board/systemd/caerd.service`) is `Type=notify` with `WatchdogSec=30`: the daemon
//! calls [`ready`] once its pipeline runs, and its run loop calls [`Watchdog::tick`] once per
//! iteration. The watchdog pings from the loop's own iteration and from nowhere else, so a
//! stalled loop stops pinging and systemd restarts the daemon. Every loop iteration must
//! therefore finish well within the ping interval (half of `WatchdogSec`): give blocking waits
//! (camera dequeue, channel receive) a timeout shorter than that.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) every notification is a successful no-op,
//! and without `$WATCHDOG_USEC` the [`Watchdog`] is disabled.

use std::env;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::error::NotifyError;

fn send(states: &[NotifyState<'_>]) -> Result<(), NotifyError> {
    sd_notify::notify(states).map_err(|source| NotifyError {
        message: states
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\\n"),
        socket: notify_socket().unwrap_or_default(),
        source,
    })
}

/// `$NOTIFY_SOCKET`, the socket systemd listens on for this service, if set.
pub fn notify_socket() -> Option<PathBuf> {
    env::var_os("NOTIFY_SOCKET").map(PathBuf::from)
}

/// Tells systemd that start-up is finished (`READY=1`).
///
/// # Errors
///
/// [`NotifyError`] when the socket is set but the datagram cannot be sent.
pub fn ready() -> Result<(), NotifyError> {
    send(&[NotifyState::Ready])
}

/// Pings the watchdog once (`WATCHDOG=1`). Prefer [`Watchdog::tick`] in the run loop.
///
/// # Errors
///
/// [`NotifyError`] when the socket is set but the datagram cannot be sent.
pub fn watchdog_ping() -> Result<(), NotifyError> {
    send(&[NotifyState::Watchdog])
}

/// Sets the status line `systemctl status` shows (`STATUS=...`). Line breaks become spaces,
/// since a newline would start another assignment.
///
/// # Errors
///
/// [`NotifyError`] when the socket is set but the datagram cannot be sent.
pub fn status(msg: &str) -> Result<(), NotifyError> {
    let line = msg.replace(['\n', '\r'], " ");
    send(&[NotifyState::Status(&line)])
}

/// Tells systemd that the daemon is shutting down (`STOPPING=1`).
///
/// # Errors
///
/// [`NotifyError`] when the socket is set but the datagram cannot be sent.
pub fn stopping() -> Result<(), NotifyError> {
    send(&[NotifyState::Stopping])
}

/// Asks systemd for more start-up time (`EXTEND_TIMEOUT_USEC=...`), e.g. while TensorRT builds
/// its engine on first start. Capped at `u32::MAX` microseconds (about 71 minutes).
///
/// # Errors
///
/// [`NotifyError`] when the socket is set but the datagram cannot be sent.
pub fn extend_timeout(by: Duration) -> Result<(), NotifyError> {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)])
}

/// Pings the systemd watchdog from the run loop, at half the watchdog timeout.
///
/// Call [`tick`](Self::tick) once per loop iteration; it sends `WATCHDOG=1` when the interval
/// has passed since the last successful ping (and on the first call). It never pings from
/// anywhere else, so a loop that stops iterating stops pinging.
#[derive(Debug, Clone)]
pub struct Watchdog {
    interval: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Watchdog {
    /// From `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, which must be this process when set), as
    /// systemd sets them for `WatchdogSec=`. Disabled when they are absent, zero or for another
    /// process.
    pub fn from_env() -> Self {
        Self::with_timeout(sd_notify::watchdog_enabled())
    }

    /// For a watchdog timeout; `None` or zero disables it. Pings every half timeout.
    pub fn with_timeout(timeout: Option<Duration>) -> Self {
        let interval = timeout.filter(|t| !t.is_zero()).map(|t| t / 2);
        Self {
            interval,
            last_ping: None,
        }
    }

    /// A watchdog that never pings.
    pub const fn disabled() -> Self {
        Self {
            interval: None,
            last_ping: None,
        }
    }

    /// The ping interval (half the timeout), or `None` when disabled.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Whether a ping is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        match (self.interval, self.last_ping) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(interval), Some(last)) => now.saturating_duration_since(last) >= interval,
        }
    }

    /// Pings if due; call once per loop iteration. Returns whether it pinged.
    ///
    /// # Errors
    ///
    /// [`NotifyError`]; the ping is then retried on the next call.
    pub fn tick(&mut self) -> Result<bool, NotifyError> {
        self.tick_at(Instant::now())
    }

    /// [`tick`](Self::tick) with an explicit clock, for tests and for loops that already read
    /// the time.
    ///
    /// # Errors
    ///
    /// [`NotifyError`]; the ping is then retried on the next call.
    pub fn tick_at(&mut self, now: Instant) -> Result<bool, NotifyError> {
        if !self.is_due(now) {
            return Ok(false);
        }
        watchdog_ping()?;
        self.last_ping = Some(now);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_half_the_timeout_and_zero_disables() {
        let wd = Watchdog::with_timeout(Some(Duration::from_secs(30)));
        assert_eq!(wd.interval(), Some(Duration::from_secs(15)));
        assert_eq!(
            Watchdog::with_timeout(Some(Duration::ZERO)).interval(),
            None
        );
        assert_eq!(Watchdog::with_timeout(None).interval(), None);
        assert!(!Watchdog::disabled().is_due(Instant::now()));
    }

    #[test]
    fn due_on_first_tick_then_every_interval() {
        let mut wd = Watchdog::with_timeout(Some(Duration::from_secs(30)));
        let t0 = Instant::now();
        assert!(wd.is_due(t0));
        // Record a ping without sending (the send itself is covered by tests/systemd_notify.rs).
        wd.last_ping = Some(t0);
        assert!(!wd.is_due(t0 + Duration::from_secs(14)));
        assert!(wd.is_due(t0 + Duration::from_secs(15)));
    }
}
