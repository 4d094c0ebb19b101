//! The capture thread: frames from the source, paced, through the privacy gate, into the
//! drop-oldest frame queue (in lockstep: unpaced, waiting for room, nothing dropped).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::daemon::board::{lock_privacy, SharedPrivacy};
use crate::daemon::build::SourceOpener;
use crate::daemon::pace::Pace;
use crate::daemon::running::Flags;
use crate::daemon::Metrics;
use crate::pipeline::frame::Frame;
use crate::pipeline::schedule::FrameQueue;
use crate::pipeline::source::{FrameSource, SourceError};

/// The capture thread's wait between privacy steps while the camera is denied.
pub(super) const PRIVACY_POLL: Duration = Duration::from_millis(50);

/// How the capture thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CaptureEnd {
    Stopped,
    SourceEnded,
}

/// The capture thread's source and what gates it.
pub(super) struct Capture {
    /// The open source, if any.
    pub(super) source: Option<Box<dyn FrameSource>>,
    pub(super) open_source: SourceOpener,
    /// The privacy controller; none: the source may always be open.
    pub(super) privacy: Option<SharedPrivacy>,
    pub(super) fps: f64,
    pub(super) max_frames: Option<u64>,
    /// Live (paced, drop-oldest) or lockstep (every frame, frame times from `fps`).
    pub(super) pace: Pace,
}

impl Capture {
    /// One privacy step (a switch sample, the LED driven); always true without a controller.
    pub(super) fn allowed(&self, wanted: bool) -> bool {
        match &self.privacy {
            None => true,
            Some(p) => lock_privacy(p).allow(wanted, self.source.is_some()),
        }
    }
}

/// Pulls frames from the source, paced to `fps`, into the queue; closes the queue at the end.
/// With a privacy controller, the source is open only while the controller allows it (see
/// the module docs); a paused pipeline then closes it too.
pub(super) fn capture_loop(
    mut capture: Capture,
    queue: &FrameQueue,
    flags: &Flags,
    metrics: &Metrics,
) -> Result<CaptureEnd, SourceError> {
    let period = Duration::from_secs_f64(1.0 / capture.fps);
    let mut next_at = Instant::now();
    let mut delivered = 0u64;
    let mut transient_errors = 0u64;
    tracing::info!(
        fps = capture.fps,
        privacy = capture.privacy.is_some(),
        "capture started"
    );
    let end = loop {
        if flags.stop.load(Ordering::Relaxed) {
            break Ok(CaptureEnd::Stopped);
        }
        if capture.max_frames.is_some_and(|m| delivered >= m) {
            break Ok(CaptureEnd::SourceEnded);
        }
        let paused = flags.paused.load(Ordering::Relaxed);
        if !capture.allowed(!paused) {
            if capture.source.take().is_some() {
                tracing::info!("camera closed (privacy switch, pause or pin error)");
                // No wait: the next step sees the camera closed and turns the LED off.
                continue;
            }
            std::thread::sleep(PRIVACY_POLL);
            continue;
        }
        if capture.source.is_none() {
            // The controller allowed it, so the LED is lit: open the camera.
            match (capture.open_source)() {
                Ok(source) => {
                    tracing::info!(source = %source.describe(), "source opened");
                    capture.source = Some(source);
                }
                Err(e) if e.is_transient() => {
                    transient_errors += 1;
                    if transient_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = transient_errors, "cannot open the source; retrying");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                Err(e) => break Err(e),
            }
        }
        if paused {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let now = Instant::now();
        if !capture.pace.is_lockstep() {
            if now < next_at {
                std::thread::sleep((next_at - now).min(Duration::from_millis(100)));
                continue;
            }
            // Keep the cadence, but never try to catch up a backlog.
            next_at = (next_at + period).max(now);
        }
        let Some(source) = capture.source.as_mut() else {
            continue;
        };
        match source.next_frame() {
            Ok(Some(mut frame)) => {
                // The switch may have been engaged while the source blocked: a frame leaves
                // only if the camera is still allowed (the next step closes it otherwise).
                if !capture.allowed(!flags.paused.load(Ordering::Relaxed)) {
                    continue;
                }
                frame.captured_at = capture.pace.frame_time(delivered);
                delivered += 1;
                metrics.frames_captured.fetch_add(1, Ordering::Relaxed);
                let queued = match capture.pace {
                    Pace::Live => queue.push(frame),
                    Pace::Lockstep { .. } => push_in_lockstep(queue, frame, flags),
                };
                if !queued {
                    break Ok(CaptureEnd::Stopped);
                }
            }
            Ok(None) => break Ok(CaptureEnd::SourceEnded),
            Err(e) if e.is_transient() => {
                transient_errors += 1;
                if transient_errors.is_power_of_two() {
                    tracing::warn!(error = %e, count = transient_errors, "source error; retrying");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => break Err(e),
        }
    };
    // Close the source first; the last privacy step then turns the LED off.
    capture.source = None;
    if let Some(p) = &capture.privacy {
        lock_privacy(p).allow(false, false);
    }
    queue.close();
    end
}

/// Waits for room for `frame` (lockstep: nothing is dropped); false once the queue is
/// closed or the pipeline stops.
fn push_in_lockstep(queue: &FrameQueue, mut frame: Frame, flags: &Flags) -> bool {
    loop {
        match queue.push_wait(frame, Duration::from_millis(100)) {
            Ok(queued) => return queued,
            Err(_) if flags.stop.load(Ordering::Relaxed) => return false,
            Err(back) => frame = back,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    use super::*;

    /// What the fake LED, switch and source saw, in order.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        LedOn,
        LedOff,
        Opened,
        Polled,
        Closed,
    }

    #[derive(Debug, Clone, Default)]
    struct Log(Arc<Mutex<Vec<Event>>>);

    impl Log {
        fn push(&self, e: Event) {
            self.0.lock().unwrap().push(e);
        }
        fn events(&self) -> Vec<Event> {
            self.0.lock().unwrap().clone()
        }
        fn count(&self, e: Event) -> usize {
            self.events().iter().filter(|x| **x == e).count()
        }
        /// Waits until `done` holds for the events (panics after 5 s).
        fn wait(&self, what: &str, done: impl Fn(&[Event]) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !done(&self.events()) {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}: {:?}",
                    self.events()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

    /// An active-high LED that logs its writes.
    struct FakeLed(Log);
    impl ErrorType for FakeLed {
        type Error = ErrorKind;
    }
    impl OutputPin for FakeLed {
        fn set_low(&mut self) -> Result<(), ErrorKind> {
            self.0.push(Event::LedOff);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), ErrorKind> {
            self.0.push(Event::LedOn);
            Ok(())
        }
    }

    /// An active-high switch: engaged while the flag is set; fails while `broken` is set.
    #[derive(Clone, Default)]
    struct FakeSwitch {
        engaged: Arc<AtomicBool>,
        broken: Arc<AtomicBool>,
    }
    impl ErrorType for FakeSwitch {
        type Error = ErrorKind;
    }
    impl InputPin for FakeSwitch {
        fn is_high(&mut self) -> Result<bool, ErrorKind> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(ErrorKind::Other);
            }
            Ok(self.engaged.load(Ordering::SeqCst))
        }
        fn is_low(&mut self) -> Result<bool, ErrorKind> {
            self.is_high().map(|high| !high)
        }
    }

    /// An endless source that logs each poll and its close.
    struct FakeSource(Log);
    impl FrameSource for FakeSource {
        fn next_frame(&mut self) -> Result<Option<crate::pipeline::frame::Frame>, SourceError> {
            self.0.push(Event::Polled);
            Ok(Some(crate::pipeline::frame::Frame::new(
                image::RgbImage::new(2, 2),
                0,
            )))
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }
    impl Drop for FakeSource {
        fn drop(&mut self) {
            self.0.push(Event::Closed);
        }
    }

    /// A capture thread gated by fake privacy pins (the switch starts engaged).
    struct Rig {
        log: Log,
        switch: FakeSwitch,
        queue: Arc<FrameQueue>,
        flags: Flags,
        thread: JoinHandle<Result<CaptureEnd, SourceError>>,
    }

    fn rig() -> Rig {
        use caer_board::privacy::{Polarity, PrivacyController, PrivacyLed, PrivacySwitch};
        let log = Log::default();
        let switch = FakeSwitch::default();
        switch.engaged.store(true, Ordering::SeqCst);
        let controller = PrivacyController::new(
            PrivacyLed::new(FakeLed(log.clone()), Polarity::ActiveHigh),
            PrivacySwitch::new(
                switch.clone(),
                Polarity::ActiveHigh,
                std::num::NonZeroU32::new(2).unwrap(),
            ),
        );
        let opener_log = log.clone();
        let capture = Capture {
            source: None,
            open_source: Box::new(move || {
                opener_log.push(Event::Opened);
                Ok(Box::new(FakeSource(opener_log.clone())) as Box<dyn FrameSource>)
            }),
            privacy: Some(crate::daemon::board::Privacy::new(controller).shared()),
            fps: 200.0,
            max_frames: None,
            pace: Pace::Live,
        };
        let queue = Arc::new(FrameQueue::new(std::num::NonZeroUsize::new(1000).unwrap()));
        let flags = Flags::new(false);
        let thread = {
            let (queue, flags) = (queue.clone(), flags.clone());
            std::thread::spawn(move || capture_loop(capture, &queue, &flags, &Metrics::new()))
        };
        Rig {
            log,
            switch,
            queue,
            flags,
            thread,
        }
    }

    /// Replays the log: the source is opened and polled only while the LED is lit, and the
    /// LED goes off only while the source is closed.
    fn check_invariants(events: &[Event]) {
        let (mut lit, mut open) = (false, false);
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::LedOn => lit = true,
                Event::LedOff => {
                    assert!(
                        !open,
                        "LED off while the source is open, at {i}: {events:?}"
                    );
                    lit = false;
                }
                Event::Opened => {
                    assert!(
                        lit && !open,
                        "source opened with the LED off, at {i}: {events:?}"
                    );
                    open = true;
                }
                Event::Polled => {
                    assert!(lit && open, "polled with the LED off, at {i}: {events:?}")
                }
                Event::Closed => open = false,
            }
        }
    }

    fn frames_since(events: &[Event], from: usize) -> usize {
        events[from..]
            .iter()
            .filter(|e| **e == Event::Polled)
            .count()
    }

    #[test]
    fn privacy_switch_closes_the_source_before_the_led_goes_off_and_reopens_it_after() {
        let r = rig();
        // Engaged from the start: nothing is opened, the LED stays off.
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            !r.log.events().contains(&Event::Opened),
            "{:?}",
            r.log.events()
        );
        assert_eq!(r.queue.pushed_total(), 0);

        // Released: LED on, then the source opens and frames flow.
        r.switch.engaged.store(false, Ordering::SeqCst);
        r.log.wait("frames", |e| frames_since(e, 0) >= 5);
        let events = r.log.events();
        let on = events.iter().position(|e| *e == Event::LedOn).unwrap();
        let opened = events.iter().position(|e| *e == Event::Opened).unwrap();
        assert!(on < opened, "{events:?}");

        // Engaged: the source is closed, then the LED goes off, and nothing is polled.
        r.switch.engaged.store(true, Ordering::SeqCst);
        r.log.wait("LED off", |e| e.last() == Some(&Event::LedOff));
        let closed_at = r.log.events().len();
        let pushed = r.queue.pushed_total();
        std::thread::sleep(Duration::from_millis(150));
        let events = r.log.events();
        assert_eq!(
            events.len(),
            closed_at,
            "activity while engaged: {events:?}"
        );
        assert_eq!(
            r.queue.pushed_total(),
            pushed,
            "frames delivered while engaged"
        );
        assert_eq!(&events[closed_at - 2..], [Event::Closed, Event::LedOff]);

        // Released again: the LED is lit before the source reopens.
        r.switch.engaged.store(false, Ordering::SeqCst);
        r.log
            .wait("frames again", |e| frames_since(e, closed_at) >= 5);
        assert_eq!(
            &r.log.events()[closed_at..closed_at + 2],
            [Event::LedOn, Event::Opened]
        );
        assert_eq!(r.log.count(Event::Opened), 2);

        // Stopping closes the source, then turns the LED off.
        r.flags.stop.store(true, Ordering::SeqCst);
        assert_eq!(r.thread.join().unwrap().unwrap(), CaptureEnd::Stopped);
        let events = r.log.events();
        assert_eq!(&events[events.len() - 2..], [Event::Closed, Event::LedOff]);
        check_invariants(&events);
        assert!(r.queue.pushed_total() as usize <= r.log.count(Event::Polled));
    }

    #[test]
    fn a_switch_error_or_a_pause_closes_the_source() {
        let r = rig();
        r.switch.engaged.store(false, Ordering::SeqCst);
        r.log.wait("frames", |e| frames_since(e, 0) >= 3);

        // A failing switch read counts as engaged.
        r.switch.broken.store(true, Ordering::SeqCst);
        r.log.wait("LED off", |e| e.last() == Some(&Event::LedOff));
        r.switch.broken.store(false, Ordering::SeqCst);
        r.log.wait("reopened", |e| {
            e.iter().filter(|x| **x == Event::Opened).count() == 2
        });

        // A pause closes the camera and turns the LED off, like the switch.
        r.flags.paused.store(true, Ordering::SeqCst);
        r.log.wait("LED off", |e| e.last() == Some(&Event::LedOff));
        let paused_at = r.log.events().len();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(r.log.events().len(), paused_at, "{:?}", r.log.events());
        r.flags.paused.store(false, Ordering::SeqCst);
        r.log.wait("resumed", |e| frames_since(e, paused_at) >= 3);

        r.flags.stop.store(true, Ordering::SeqCst);
        r.thread.join().unwrap().unwrap();
        check_invariants(&r.log.events());
    }
}
