//! Per-student sliding window of image features.
//!
//! A [`FeatureWindow`] keeps the last `T` (face, context) embedding pairs of one track, each
//! `D` floats: features only, never pixels. It is a ring buffer over one flat, preallocated
//! `Vec<f32>` of `2*T*D` floats (face half, then context half) with a start index and a
//! length, so pushing never allocates. When it holds `T` pairs it is full and
//! [`FeatureWindow::write_ordered`] copies them out oldest first; the caller then
//! [`discards`](FeatureWindow::discard_oldest) `stride` pairs to slide it.
//!
//! Invariants: `len <= capacity`; the pair pushed `k` pushes ago (k < len) sits at slot
//! `(start + len - 1 - k) % capacity`.

use std::num::NonZeroUsize;

/// The last `capacity` (face, context) feature pairs of one track.
#[derive(Debug, Clone)]
pub struct FeatureWindow {
    capacity: usize,
    dim: usize,
    /// `capacity * dim` face floats, then `capacity * dim` context floats.
    data: Vec<f32>,
    /// Slot of the oldest pair.
    start: usize,
    /// Pairs held.
    len: usize,
}

impl FeatureWindow {
    /// An empty window of `capacity` pairs of `dim`-float features (allocates here, once).
    pub fn new(capacity: NonZeroUsize, dim: NonZeroUsize) -> Self {
        let (capacity, dim) = (capacity.get(), dim.get());
        FeatureWindow {
            capacity,
            dim,
            data: vec![0.0; 2 * capacity * dim],
            start: 0,
            len: 0,
        }
    }

    /// `T`, the pairs a full window holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `D`, the floats in one feature.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Pairs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no pair is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `capacity` pairs are held.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// Appends a pair; when full, the oldest pair is overwritten.
    ///
    /// # Panics
    ///
    /// If `face` or `context` is not `dim` floats long.
    pub fn push(&mut self, face: &[f32], context: &[f32]) {
        assert_eq!(face.len(), self.dim, "face feature length");
        assert_eq!(context.len(), self.dim, "context feature length");
        let slot = (self.start + self.len) % self.capacity;
        let (faces, contexts) = self.data.split_at_mut(self.capacity * self.dim);
        faces[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(face);
        contexts[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(context);
        if self.len == self.capacity {
            self.start = (self.start + 1) % self.capacity;
        } else {
            self.len += 1;
        }
    }

    /// Copies the held pairs oldest first into `face` and `context` (`[len, dim]` each,
    /// row-major) and returns how many pairs were written.
    ///
    /// # Panics
    ///
    /// If either buffer is shorter than `len * dim`.
    pub fn write_ordered(&self, face: &mut [f32], context: &mut [f32]) -> usize {
        let n = self.len * self.dim;
        let (faces, contexts) = self.data.split_at(self.capacity * self.dim);
        // The held pairs are slots start.. (to the end) then ..the wrap point.
        let first = ((self.capacity - self.start).min(self.len)) * self.dim;
        let begin = self.start * self.dim;
        for (src, dst) in [(faces, &mut face[..n]), (contexts, &mut context[..n])] {
            dst[..first].copy_from_slice(&src[begin..begin + first]);
            dst[first..].copy_from_slice(&src[..n - first]);
        }
        self.len
    }

    /// Drops the `n` oldest pairs (all of them if `n >= len`).
    pub fn discard_oldest(&mut self, n: usize) {
        let n = n.min(self.len);
        self.start = (self.start + n) % self.capacity;
        self.len -= n;
    }

    /// Drops every pair, keeping the memory.
    pub fn clear(&mut self) {
        self.start = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(capacity: usize, dim: usize) -> FeatureWindow {
        FeatureWindow::new(
            NonZeroUsize::new(capacity).unwrap(),
            NonZeroUsize::new(dim).unwrap(),
        )
    }

    /// Pushes pair `k` as face `[k, k+0.5]`, context `[-k, -k-0.5]`.
    fn push_pair(w: &mut FeatureWindow, k: usize) {
        let k = k as f32;
        w.push(&[k, k + 0.5], &[-k, -k - 0.5]);
    }

    fn ordered(w: &FeatureWindow) -> (Vec<f32>, Vec<f32>) {
        let mut face = vec![f32::NAN; w.capacity() * w.dim()];
        let mut context = face.clone();
        let n = w.write_ordered(&mut face, &mut context);
        face.truncate(n * w.dim());
        context.truncate(n * w.dim());
        (face, context)
    }

    #[test]
    fn fills_in_order_then_reports_full() {
        let mut w = window(3, 2);
        assert!(w.is_empty());
        push_pair(&mut w, 0);
        push_pair(&mut w, 1);
        assert!(!w.is_full());
        push_pair(&mut w, 2);
        assert!(w.is_full());
        let (face, context) = ordered(&w);
        assert_eq!(face, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(context, [-0.0, -0.5, -1.0, -1.5, -2.0, -2.5]);
    }

    #[test]
    fn overwrites_the_oldest_when_full() {
        let mut w = window(3, 2);
        for k in 0..5 {
            push_pair(&mut w, k);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(ordered(&w).0, [2.0, 2.5, 3.0, 3.5, 4.0, 4.5]);
    }

    #[test]
    fn discarding_slides_the_window() {
        let mut w = window(4, 2);
        for k in 0..4 {
            push_pair(&mut w, k);
        }
        w.discard_oldest(1);
        assert_eq!(w.len(), 3);
        push_pair(&mut w, 4);
        assert!(w.is_full());
        assert_eq!(ordered(&w).0, [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]);
        w.discard_oldest(10);
        assert!(w.is_empty());
    }

    #[test]
    fn wrapped_window_is_ordered_for_every_start() {
        for start in 0..5 {
            let mut w = window(5, 1);
            for k in 0..start {
                w.push(&[k as f32], &[0.0]);
            }
            w.discard_oldest(start);
            for k in 0..5 {
                w.push(&[(100 + k) as f32], &[k as f32]);
            }
            let (face, context) = ordered(&w);
            assert_eq!(face, [100.0, 101.0, 102.0, 103.0, 104.0], "start {start}");
            assert_eq!(context, [0.0, 1.0, 2.0, 3.0, 4.0], "start {start}");
        }
    }

    #[test]
    fn pushing_does_not_reallocate() {
        let mut w = window(4, 3);
        let before = w.data.as_ptr();
        for k in 0..100 {
            w.push(&[k as f32; 3], &[0.0; 3]);
            if k % 7 == 0 {
                w.discard_oldest(2);
            }
        }
        assert_eq!(before, w.data.as_ptr());
        assert_eq!(w.data.capacity(), 24);
    }

    #[test]
    #[should_panic(expected = "face feature length")]
    fn wrong_feature_length_panics() {
        window(2, 3).push(&[0.0; 2], &[0.0; 3]);
    }
}
