//! Test-time frame sampling: which `T` frames of an `F`-frame clip the model sees.
//!
//! The reference, computed in `f64` like Python: if `F > T`, `tick = F / T` and frame `i` is
//! `int(tick / 2 + tick * i)`; otherwise frames `0..F` padded by repeating the last one.
//! Indices are non-decreasing and always below `F`.

/// The `frames_per_clip` frame indices to sample from a clip of `num_frames` frames.
///
/// Returns `None` when either count is zero (there is nothing to sample, or nothing to fill).
pub fn sample_indices(num_frames: usize, frames_per_clip: usize) -> Option<Vec<usize>> {
    if num_frames == 0 || frames_per_clip == 0 {
        return None;
    }
    let indices = if num_frames > frames_per_clip {
        let tick = num_frames as f64 / frames_per_clip as f64;
        (0..frames_per_clip)
            // Truncation like Python's int(); the min guards against a rounding overshoot.
            .map(|i| ((tick / 2.0 + tick * i as f64) as usize).min(num_frames - 1))
            .collect()
    } else {
        (0..frames_per_clip)
            .map(|i| i.min(num_frames - 1))
            .collect()
    };
    Some(indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_clips_take_segment_centres() {
        // CPython: [int(50/16/2 + 50/16*i) for i in range(16)]
        assert_eq!(
            sample_indices(50, 16).unwrap(),
            [1, 4, 7, 10, 14, 17, 20, 23, 26, 29, 32, 35, 39, 42, 45, 48]
        );
        assert_eq!(
            sample_indices(17, 16).unwrap(),
            [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16]
        );
        assert_eq!(
            sample_indices(32, 16).unwrap(),
            (0..16).map(|i| 2 * i + 1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn short_clips_repeat_the_last_frame() {
        let mut expected: Vec<usize> = (0..5).collect();
        expected.resize(16, 4);
        assert_eq!(sample_indices(5, 16).unwrap(), expected);
        assert_eq!(sample_indices(1, 3).unwrap(), [0, 0, 0]);
    }

    #[test]
    fn equal_length_takes_every_frame() {
        assert_eq!(sample_indices(16, 16).unwrap(), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn nothing_to_sample() {
        assert_eq!(sample_indices(0, 16), None);
        assert_eq!(sample_indices(10, 0), None);
    }

    #[test]
    fn indices_stay_in_range_for_many_lengths() {
        for f in 1..2000 {
            let idx = sample_indices(f, 16).unwrap();
            assert_eq!(idx.len(), 16);
            assert!(idx.windows(2).all(|w| w[0] <= w[1]) && idx[15] < f, "F={f}");
        }
    }
}
