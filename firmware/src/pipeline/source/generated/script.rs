//! The scripted academic states of the synthetic classroom: who is in which state when.
//!
//! Time is cut into segments of `state_frames` frames, the same for every student (so a run
//! shorter than one segment sees every student in one state). In each segment each student
//! draws one of the five classes, in [`crate::pipeline::model::bundle::CLASSES`] order, with
//! the weights of [`STATE_WEIGHTS`]: a pure function of the seed, the seat and the segment.

use super::splitmix;

/// Neutrality, enjoyment, confusion, fatigue, distraction: how often each is drawn, in
/// per mille.
pub const STATE_WEIGHTS: [u64; 5] = [300, 200, 150, 150, 200];

/// Class indices, for readability where the renderer picks cues.
pub const NEUTRALITY: usize = 0;
/// Smile, cheeks.
pub const ENJOYMENT: usize = 1;
/// Furrowed brows, a hand at the chin.
pub const CONFUSION: usize = 2;
/// Closed eyes, a drooping head, yawns.
pub const FATIGUE: usize = 3;
/// A neutral face over a phone in the hands: visible in the context only.
pub const DISTRACTION: usize = 4;

/// The state of seat `student` in segment `segment` of a classroom drawn with `seed`.
pub fn state_of(seed: u64, student: usize, segment: u64) -> usize {
    let r = splitmix(splitmix(seed ^ 0x5EED_0F57_A7E5) ^ splitmix(student as u64) ^ segment);
    let mut pick = r % STATE_WEIGHTS.iter().sum::<u64>();
    for (class, &weight) in STATE_WEIGHTS.iter().enumerate() {
        if pick < weight {
            return class;
        }
        pick -= weight;
    }
    NEUTRALITY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_drawn_about_as_often_as_its_weight() {
        let mut counts = [0u64; 5];
        for student in 0..100 {
            for segment in 0..100 {
                counts[state_of(7, student, segment)] += 1;
            }
        }
        for (class, (&n, &w)) in counts.iter().zip(&STATE_WEIGHTS).enumerate() {
            // 10,000 draws: within 3 points of the weight.
            let per_mille = n / 10;
            assert!(
                per_mille.abs_diff(w) <= 30,
                "class {class}: {per_mille} vs {w}"
            );
        }
        assert_eq!(state_of(7, 3, 9), state_of(7, 3, 9));
        assert!(
            (0..50).any(|s| state_of(7, s, 0) != state_of(8, s, 0)),
            "seeds differ"
        );
    }
}
