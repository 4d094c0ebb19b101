//! Exponential backoff between attempts to reopen a lost camera.
//!
//! The delay starts at `initial`, doubles after each failed attempt up to `max`, and goes
//! back to `initial` once the camera delivers a frame again ([`Backoff::reset`]). No
//! jitter: one process retries one local device, nothing to desynchronise.

use std::time::Duration;

/// Delays between reconnection attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial` and never exceeds `max` (raised to `initial` if below it).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to the initial delay (the device works again).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(500), ms(3000));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays, [ms(500), ms(1000), ms(2000), ms(3000), ms(3000)]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(500));
        assert_eq!(Backoff::new(ms(10), ms(1)).next_delay(), ms(10));
    }
}
