//! Exponential backoff between attempts: reopening a lost camera, reconnecting to the broker.
//!
//! The delay starts at `initial`, doubles after each failed attempt up to `max`, and goes
//! back to `initial` once the attempt succeeds ([`Backoff::reset`]). A camera is retried
//! without jitter (one process, one local device: nothing to desynchronise); a broker with
//! jitter ([`Backoff::with_jitter`]: each delay drawn in `[d/2, d]`), so that a fleet that
//! lost its broker at once does not reconnect at once.

use std::time::Duration;

/// Delays between reconnection attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    /// xorshift64 state when jittered.
    jitter: Option<u64>,
}

impl Backoff {
    /// Starts at `initial` and never exceeds `max` (raised to `initial` if below it).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
            jitter: None,
        }
    }

    /// Like [`Backoff::new`], each delay drawn in `[d/2, d]`, seeded from the clock and the
    /// process id.
    pub fn with_jitter(initial: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            jitter: Some(seed | 1),
            ..Backoff::new(initial, max)
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = match &mut self.jitter {
            None => self.next,
            Some(rng) => {
                // xorshift64: jitter only, no need for a better generator.
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                let unit = (*rng >> 11) as f64 / (1u64 << 53) as f64;
                self.next.mul_f64(0.5 + 0.5 * unit)
            }
        };
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

    #[test]
    fn jittered_delays_stay_within_half_and_whole_of_the_step() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::with_jitter(ms(400), ms(1600));
        for step in [400, 800, 1600, 1600, 1600] {
            let d = backoff.next_delay();
            assert!(d >= ms(step / 2) && d <= ms(step), "{d:?} for {step}");
        }
    }
}
