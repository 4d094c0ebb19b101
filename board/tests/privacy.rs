//! The privacy LED, switch and controller on mocked pins.

use std::num::NonZeroU32;

use caer_board::privacy::{
    GuardState, Polarity, PrivacyController, PrivacyLed, PrivacySwitch, SwitchState,
};
use caer_board::BoardError;
use embedded_hal::digital::PinState;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as T};
use embedded_hal_mock::eh1::MockError;

use crate::common::{FakeInput, FakeOutput};

fn samples(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero sample count")
}

fn controller(
    led: &[T],
    switch: &[T],
    polarity: Polarity,
    release_after: u32,
) -> PrivacyController<PinMock, PinMock> {
    PrivacyController::new(
        PrivacyLed::new(PinMock::new(led), polarity),
        PrivacySwitch::new(PinMock::new(switch), polarity, samples(release_after)),
    )
}

/// Checks that every listed transaction happened.
fn done(controller: PrivacyController<PinMock, PinMock>) {
    let (mut led, mut switch) = controller.release();
    led.done();
    switch.done();
}

fn pin_error() -> MockError {
    MockError::Io(std::io::ErrorKind::Other)
}

#[test]
fn engaged_switch_closes_the_camera_and_turns_the_led_off() {
    let mut privacy = controller(
        &[T::set(State::High), T::set(State::Low)],
        &[T::get(State::Low), T::get(State::High), T::get(State::High)],
        Polarity::ActiveHigh,
        1,
    );

    // Switch released, capture wants to run: LED on, camera allowed.
    let d = privacy.update(true, false).expect("update");
    assert!(d.camera_allowed && d.led_on);
    assert_eq!(d.state, GuardState::Open);

    // The camera opened; now the switch is engaged: camera denied, LED stays on while the
    // camera is still open.
    let d = privacy.update(true, true).expect("update");
    assert!(!d.camera_allowed && d.led_on, "{d:?}");
    assert_eq!(
        (d.switch, d.state),
        (SwitchState::Engaged, GuardState::Closing)
    );

    // The camera closed: LED off.
    let d = privacy.update(true, false).expect("update");
    assert!(!d.camera_allowed && !d.led_on, "{d:?}");
    assert_eq!(d.state, GuardState::Closed);
    assert!(!privacy.camera_allowed());
    done(privacy);
}

#[test]
fn active_low_pins_are_driven_and_read_inverted() {
    let mut privacy = controller(
        &[T::set(State::Low), T::set(State::High)],
        &[T::get(State::High), T::get(State::Low), T::get(State::Low)],
        Polarity::ActiveLow,
        1,
    );
    assert!(privacy.update(true, false).expect("update").camera_allowed);
    let d = privacy.update(true, true).expect("update");
    assert!(!d.camera_allowed && d.led_on);
    let d = privacy.update(true, false).expect("update");
    assert!(!d.camera_allowed && !d.led_on);
    done(privacy);
}

#[test]
fn camera_not_wanted_turns_the_led_off_on_the_first_update() {
    // The LED state is unknown after construction, so the first update writes it.
    let mut privacy = controller(
        &[T::set(State::Low)],
        &[T::get(State::Low), T::get(State::Low)],
        Polarity::ActiveHigh,
        1,
    );
    let d = privacy.update(false, false).expect("update");
    assert!(!d.camera_allowed && !d.led_on);
    // No change: no write.
    privacy.update(false, false).expect("update");
    done(privacy);
}

#[test]
fn switch_read_error_denies_the_camera_and_keeps_the_led_on_while_it_is_open() {
    let mut privacy = controller(
        &[T::set(State::High)],
        &[
            T::get(State::Low),
            T::get(State::Low).with_error(pin_error()),
            T::get(State::Low),
        ],
        Polarity::ActiveHigh,
        1,
    );
    assert!(privacy.update(true, false).expect("update").camera_allowed);

    let err = privacy.update(true, true).expect_err("switch read fails");
    assert!(matches!(err, BoardError::Switch(_)), "{err:?}");
    assert!(err.to_string().starts_with("privacy switch pin"), "{err}");
    assert!(!privacy.camera_allowed());
    // The camera is still open: the LED stays on (no write expected).
    assert_eq!(privacy.state(), GuardState::Closing);

    // The next good read releases again (release_after = 1).
    assert!(privacy.update(true, false).expect("update").camera_allowed);
    done(privacy);
}

#[test]
fn led_write_error_denies_the_camera_until_a_write_succeeds() {
    let mut privacy = controller(
        &[
            T::set(State::High).with_error(pin_error()),
            T::set(State::High),
        ],
        &[T::get(State::Low), T::get(State::Low)],
        Polarity::ActiveHigh,
        1,
    );
    let err = privacy.update(true, false).expect_err("led write fails");
    assert!(matches!(err, BoardError::Led(_)), "{err:?}");
    assert_eq!(err.kind(), embedded_hal::digital::ErrorKind::Other);
    assert!(!privacy.camera_allowed());

    // The LED state is unknown, so the next update writes it again.
    assert!(privacy.update(true, false).expect("update").camera_allowed);
    done(privacy);
}

#[test]
fn switch_engages_at_once_and_releases_after_stable_samples() {
    let pin = PinMock::new(&[
        T::get(State::Low),
        T::get(State::Low),
        T::get(State::High),
        T::get(State::Low),
        T::get(State::Low),
        T::get(State::Low),
        T::get(State::High),
    ]);
    let mut switch = PrivacySwitch::new(pin, Polarity::ActiveHigh, samples(3));
    assert_eq!(switch.state(), SwitchState::Engaged, "starts engaged");
    let states: Vec<SwitchState> = (0..7).map(|_| switch.sample().expect("sample")).collect();
    use SwitchState::{Engaged as E, Released as R};
    assert_eq!(states, [E, E, E, E, E, R, E]);
    switch.release().done();
}

#[test]
fn led_skips_redundant_writes() {
    let pin = PinMock::new(&[T::set(State::High), T::set(State::Low), T::set(State::High)]);
    let mut led = PrivacyLed::new(pin, Polarity::ActiveHigh);
    assert_eq!(led.is_lit(), None);
    led.on().expect("on");
    led.on().expect("on again, no write");
    led.off().expect("off");
    led.off().expect("off again, no write");
    led.on().expect("on");
    assert_eq!(led.is_lit(), Some(true));
    led.release().done();
}

/// One step of the property test's environment.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// The switch's physical position this step.
    switch_engaged: bool,
    /// The capture stage wants the camera.
    wanted: bool,
    /// The capture stage acts on the decision this step (else it lags a step).
    camera_reacts: bool,
    fault: Fault,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Led,
    Switch,
}

const ALPHABET_LEN: usize = 24;

fn step_from_index(i: usize) -> Step {
    Step {
        switch_engaged: i & 1 != 0,
        wanted: i & 2 != 0,
        camera_reacts: i & 4 != 0,
        fault: match i / 8 {
            0 => Fault::None,
            1 => Fault::Led,
            _ => Fault::Switch,
        },
    }
}

/// Runs one sequence against the controller on state-tracking fake pins and checks the
/// invariants after every update and every camera action. Returns how many steps had the
/// camera open, so that callers can check the sequences exercised it.
fn check_sequence(
    steps: &[Step],
    led_polarity: Polarity,
    switch_polarity: Polarity,
    release: u32,
) -> usize {
    let led_pin = FakeOutput::default();
    let switch_pin = FakeInput::default();
    let mut privacy = PrivacyController::new(
        PrivacyLed::new(led_pin.clone(), led_polarity),
        PrivacySwitch::new(switch_pin.clone(), switch_polarity, samples(release)),
    );
    // The LED as seen by a person: lit or not, from the physical level.
    let lit = || led_pin.high.get().map(|high| led_polarity.is_active(high));
    let mut camera_open = false;
    let mut open_steps = 0;
    for (n, step) in steps.iter().enumerate() {
        let ctx = || {
            format!("step {n} of {steps:?} (led {led_polarity:?}, switch {switch_polarity:?}, release {release})")
        };
        switch_pin
            .high
            .set(switch_polarity.level(step.switch_engaged) == PinState::High);
        match step.fault {
            Fault::None => {}
            Fault::Led => led_pin.fail_next.set(true),
            Fault::Switch => switch_pin.fail_next.set(true),
        }
        let result = privacy.update(step.wanted, camera_open);
        led_pin.fail_next.set(false);
        switch_pin.fail_next.set(false);
        let allowed = matches!(result, Ok(d) if d.camera_allowed);
        assert_eq!(allowed, privacy.camera_allowed(), "{}", ctx());

        // The invariant: the LED is never off while frames may be captured.
        if camera_open || allowed {
            assert_eq!(
                lit(),
                Some(true),
                "LED not lit while frames may be captured: {}",
                ctx()
            );
        }
        // The switch wins.
        if step.switch_engaged {
            assert!(
                !allowed,
                "camera allowed with the switch engaged: {}",
                ctx()
            );
        }
        if let Ok(d) = result {
            // The decision reports the LED as it is.
            assert_eq!(lit(), Some(d.led_on), "{}", ctx());
            // Engaged and closed: LED off.
            if d.switch.is_engaged() && !camera_open {
                assert_eq!(lit(), Some(false), "{}", ctx());
            }
        }

        // The capture stage acts: it opens only while allowed, closes when denied or unwanted.
        if step.camera_reacts {
            camera_open = allowed && step.wanted;
        }
        if camera_open {
            open_steps += 1;
            assert_eq!(lit(), Some(true), "camera open with the LED off: {}", ctx());
        }
    }
    open_steps
}

const CONFIGS: [(Polarity, Polarity, u32); 4] = [
    (Polarity::ActiveHigh, Polarity::ActiveHigh, 1),
    (Polarity::ActiveLow, Polarity::ActiveLow, 2),
    (Polarity::ActiveHigh, Polarity::ActiveLow, 1),
    (Polarity::ActiveLow, Polarity::ActiveHigh, 3),
];

#[test]
fn led_is_never_off_while_frames_may_be_captured_for_every_short_sequence() {
    // Every sequence of 4 steps over 24 step kinds (switch, wanted, camera lag, pin faults).
    const LEN: u32 = 4;
    let total = ALPHABET_LEN.pow(LEN);
    for (led, switch, release) in CONFIGS {
        for code in 0..total {
            let mut rest = code;
            let steps: Vec<Step> = (0..LEN)
                .map(|_| {
                    let s = step_from_index(rest % ALPHABET_LEN);
                    rest /= ALPHABET_LEN;
                    s
                })
                .collect();
            check_sequence(&steps, led, switch, release);
        }
    }
}

#[test]
fn led_is_never_off_while_frames_may_be_captured_over_long_random_sequences() {
    // xorshift64: deterministic, no dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut open_steps, mut total_steps) = (0, 0);
    for (led, switch, release) in CONFIGS {
        for _ in 0..200 {
            // The switch and the capture stage's wish change now and then (1 step in 8), so that
            // the debounce gets to release; faults hit about 1 step in 16.
            let (mut switch_engaged, mut wanted) = (false, true);
            let steps: Vec<Step> = (0..300)
                .map(|_| {
                    let r = next();
                    if r & 7 == 0 {
                        switch_engaged = !switch_engaged;
                    }
                    if (r >> 3) & 7 == 0 {
                        wanted = !wanted;
                    }
                    let fault = match r >> 60 {
                        0 => Fault::Led,
                        1 => Fault::Switch,
                        _ => Fault::None,
                    };
                    Step {
                        switch_engaged,
                        wanted,
                        camera_reacts: (r >> 6) & 3 != 0,
                        fault,
                    }
                })
                .collect();
            total_steps += steps.len();
            open_steps += check_sequence(&steps, led, switch, release);
        }
    }
    // The sequences did open the camera for a good share of the steps.
    assert!(
        open_steps * 5 > total_steps,
        "{open_steps} of {total_steps} steps open"
    );
}
