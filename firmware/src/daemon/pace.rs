//! How frames are timed. A live source is paced by the clock and late frames are dropped
//! (a camera cannot wait). In lockstep (`source.lockstep`, for replaying a file or checking
//! one build against another) the source waits for the pipeline instead, and every frame's
//! time is its place in the stream at `source.fps` from a shared epoch: sampling and report
//! intervals then follow the frames, not the speed of the machine, so two machines that
//! analyse the same frames publish the same figures.

use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy)]
pub(super) enum Pace {
    Live,
    Lockstep {
        epoch: Instant,
        epoch_wall: SystemTime,
        fps: f64,
    },
}

impl Pace {
    /// Lockstep from now at `fps`, or live.
    pub(super) fn new(lockstep: bool, fps: f64) -> Pace {
        if lockstep {
            Pace::Lockstep {
                epoch: Instant::now(),
                epoch_wall: SystemTime::now(),
                fps,
            }
        } else {
            Pace::Live
        }
    }

    pub(super) fn is_lockstep(&self) -> bool {
        matches!(self, Pace::Lockstep { .. })
    }

    /// The time of frame `n` (from 0) of the stream in lockstep (computed from `n`, not
    /// summed, so that no rounding accumulates); now when live.
    pub(super) fn frame_time(&self, n: u64) -> Instant {
        match *self {
            Pace::Live => Instant::now(),
            Pace::Lockstep { epoch, fps, .. } => epoch + Duration::from_secs_f64(n as f64 / fps),
        }
    }

    /// The wall-clock time that `at` stands for: the stream's time in lockstep.
    pub(super) fn wall(&self, at: Instant) -> SystemTime {
        match *self {
            Pace::Live => SystemTime::now(),
            Pace::Lockstep {
                epoch, epoch_wall, ..
            } => epoch_wall + at.saturating_duration_since(epoch),
        }
    }

    /// When the stream starts: the epoch in lockstep, now when live.
    pub(super) fn start(&self) -> Instant {
        match *self {
            Pace::Live => Instant::now(),
            Pace::Lockstep { epoch, .. } => epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockstep_frame_times_follow_the_frame_rate_not_the_clock() {
        let pace = Pace::new(true, 5.0);
        let start = pace.start();
        assert_eq!(pace.frame_time(0), start);
        assert_eq!(pace.frame_time(25) - start, Duration::from_secs(5));
        assert_eq!(pace.frame_time(7) - start, Duration::from_millis(1400));
        let Pace::Lockstep { epoch_wall, .. } = pace else {
            panic!("not lockstep");
        };
        assert_eq!(
            pace.wall(pace.frame_time(50)),
            epoch_wall + Duration::from_secs(10)
        );
    }
}
