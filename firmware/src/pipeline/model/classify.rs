//! From frames and boxes to class probabilities: the clip classifier (bench) and the
//! streaming classifier (daemon), plus softmax, argmax and the coarse label.
//!
//! - [`ClipClassifier::classify`] reproduces the reference on one whole clip: test-time
//!   sampling of `T` frames, face and context preprocessing, the encoder over all `2T` crops,
//!   the temporal head, softmax.
//! - [`StreamingClassifier::push_frame`] takes one camera frame with the boxes of every
//!   tracked student, encodes all their crops in one batched encoder call, appends the
//!   features to each track's [`FeatureWindow`], and runs the head (one batched call) for
//!   the tracks whose window is full; those windows then slide by `stride` frames (default
//!   `T`: non-overlapping windows). Unlike the reference clip, the context box may change
//!   from frame to frame (it follows the tracker).
//!
//! Bounds: images per encoder call are capped by `max_batch`; tracks by `max_tracks`, each
//! holding one preallocated window of `2*T*D` floats. When a new track arrives and every
//! slot is taken, the track unseen for longest is evicted (counted in
//! [`StreamingClassifier::evicted_total`]). After the first frames have warmed up the
//! buffers, pushing a frame allocates only the returned results.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::error::{ClassifyError, InferenceError, PreprocessError};
use crate::pipeline::model::backend::InferenceBackend;
use crate::pipeline::model::bundle::{CoarseLabel, ModelDims, NUM_CLASSES};
use crate::pipeline::model::sampling::sample_indices;
use crate::pipeline::model::window::FeatureWindow;
use crate::pipeline::preprocess::{pixel_box, PixelBox, Preprocessor, RgbFrame};

/// Default cap on images per encoder call.
pub const DEFAULT_MAX_BATCH: NonZeroUsize = NonZeroUsize::new(16).unwrap();

/// Default cap on tracked students.
pub const DEFAULT_MAX_TRACKS: NonZeroUsize = NonZeroUsize::new(32).unwrap();

/// Softmax of `logits`, computed stably (the maximum is subtracted first).
pub fn softmax<const N: usize>(logits: &[f32; N]) -> [f32; N] {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut out = logits.map(|l| (l - max).exp());
    let sum: f32 = out.iter().sum();
    out.iter_mut().for_each(|p| *p /= sum);
    out
}

/// Index of the largest value, the first one on ties (like NumPy and PyTorch); `None` if
/// `values` is empty. NaNs are never chosen over a number.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        let better = match best {
            None => true,
            Some((_, b)) => v > b || (b.is_nan() && !v.is_nan()),
        };
        if better {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The coarse label of the most probable class, with the bundle's mapping
/// ([`crate::pipeline::model::bundle::Bundle::coarse`]).
pub fn coarse_label(
    scores: &[f32; NUM_CLASSES],
    mapping: &[CoarseLabel; NUM_CLASSES],
) -> CoarseLabel {
    // A fixed-size, non-empty array always has an argmax.
    mapping[argmax(scores).unwrap_or(0)]
}

/// The classification of one whole clip, with its intermediate features.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipResult {
    /// The frames the model saw (test-time sampling), `T` of them.
    pub sampled_indices: Vec<usize>,
    /// Raw class scores, in [`crate::pipeline::model::bundle::CLASSES`] order.
    pub logits: [f32; NUM_CLASSES],
    /// Softmax of the logits.
    pub probabilities: [f32; NUM_CLASSES],
    /// Face embeddings, `[T, D]` row-major.
    pub face_features: Vec<f32>,
    /// Context embeddings, `[T, D]` row-major.
    pub context_features: Vec<f32>,
}

impl ClipResult {
    /// Index of the most probable class.
    pub fn predicted_class(&self) -> usize {
        argmax(&self.logits).unwrap_or(0)
    }
}

/// Runs the encoder over many images in batches of at most `max_batch`, reusing one pixel
/// buffer.
#[derive(Debug)]
struct BatchEncoder {
    max_batch: usize,
    pixels: Vec<f32>,
    /// Time spent in the backend's encoder calls since creation (not in preprocessing).
    busy: Duration,
}

impl BatchEncoder {
    fn new(dims: &ModelDims, max_batch: usize) -> Self {
        BatchEncoder {
            max_batch,
            pixels: vec![0.0; max_batch * dims.image_len()],
            busy: Duration::ZERO,
        }
    }

    /// Encodes `count` images into `embeddings` (`[count, D]`); `fill(i, buffer)` writes
    /// image `i`'s `[3, S, S]` input.
    fn encode<E: From<InferenceError>>(
        &mut self,
        backend: &dyn InferenceBackend,
        count: usize,
        embeddings: &mut [f32],
        mut fill: impl FnMut(usize, &mut [f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let dims = backend.dims();
        let (image_len, d) = (dims.image_len(), dims.embed_dim);
        let mut first = 0;
        while first < count {
            let n = self.max_batch.min(count - first);
            let pixels = &mut self.pixels[..n * image_len];
            for (k, image) in pixels.chunks_exact_mut(image_len).enumerate() {
                fill(first + k, image)?;
            }
            let out = &mut embeddings[first * d..(first + n) * d];
            let start = Instant::now();
            let encoded = backend.encode_images(pixels, n, out);
            self.busy += start.elapsed();
            encoded?;
            first += n;
        }
        Ok(())
    }
}

fn check_classes(backend: &dyn InferenceBackend) -> Result<ModelDims, ClassifyError> {
    let dims = backend.dims();
    if dims.num_classes != NUM_CLASSES {
        return Err(ClassifyError::ClassCount {
            found: dims.num_classes,
            expected: NUM_CLASSES,
        });
    }
    Ok(dims)
}

/// Classifies whole clips the way the reference does (the bench and parity path).
pub struct ClipClassifier {
    backend: Arc<dyn InferenceBackend>,
    preprocessor: Preprocessor,
    encoder: BatchEncoder,
}

impl ClipClassifier {
    /// A classifier over `backend`, growing face boxes by `face_margin` pixels
    /// ([`crate::pipeline::model::bundle::Bundle::face_margin`]) and encoding at most `max_batch` images per
    /// call.
    pub fn new(
        backend: Arc<dyn InferenceBackend>,
        face_margin: u32,
        max_batch: NonZeroUsize,
    ) -> Result<Self, ClassifyError> {
        let dims = check_classes(backend.as_ref())?;
        Ok(ClipClassifier {
            preprocessor: Preprocessor::new(dims.input_size, face_margin),
            encoder: BatchEncoder::new(&dims, max_batch.get()),
            backend,
        })
    }

    /// Classifies one clip: `frames` are all its frames in order, `face_boxes` one optional
    /// `[left, top, right, bottom]` per frame, `body_box` the clip's body box (whole frames if
    /// none).
    pub fn classify(
        &mut self,
        frames: &[RgbFrame<'_>],
        face_boxes: &[Option<PixelBox>],
        body_box: Option<PixelBox>,
    ) -> Result<ClipResult, ClassifyError> {
        if face_boxes.len() != frames.len() {
            return Err(ClassifyError::FaceBoxCount {
                frames: frames.len(),
                boxes: face_boxes.len(),
            });
        }
        let dims = self.backend.dims();
        let t = dims.frames_per_clip;
        let indices = sample_indices(frames.len(), t).ok_or(ClassifyError::EmptyClip)?;

        // Rows 0..T are the face crops, rows T..2T the context crops.
        let mut features = vec![0.0; 2 * t * dims.embed_dim];
        let preprocessor = &mut self.preprocessor;
        self.encoder
            .encode(self.backend.as_ref(), 2 * t, &mut features, |i, pixels| {
                let frame_index = indices[i % t];
                let frame = frames[frame_index];
                let result = if i < t {
                    preprocessor.face_input(frame, face_boxes[frame_index], pixels)
                } else {
                    preprocessor.context_input(frame, body_box, pixels)
                };
                result.map_err(|source| ClassifyError::Frame {
                    frame_index,
                    source,
                })
            })?;
        let context_features = features.split_off(t * dims.embed_dim);
        let face_features = features;

        let mut logits = [0.0; NUM_CLASSES];
        self.backend
            .run_head(&face_features, &context_features, 1, &mut logits)?;
        Ok(ClipResult {
            sampled_indices: indices,
            logits,
            probabilities: softmax(&logits),
            face_features,
            context_features,
        })
    }
}

/// Settings of a [`StreamingClassifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingConfig {
    /// Frames a full window slides before the next result, `1..=T`; `None` means `T`
    /// (non-overlapping windows, one result per `T` frames per track).
    pub stride: Option<NonZeroUsize>,
    /// Most tracks kept at once; a frame may not carry more.
    pub max_tracks: NonZeroUsize,
    /// Most images per encoder call (each track contributes two per frame).
    pub max_batch: NonZeroUsize,
    /// Margin grown around face boxes, in pixels ([`crate::pipeline::model::bundle::Bundle::face_margin`]).
    pub face_margin: u32,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            stride: None,
            max_tracks: DEFAULT_MAX_TRACKS,
            max_batch: DEFAULT_MAX_BATCH,
            face_margin: crate::pipeline::preprocess::DEFAULT_FACE_MARGIN,
        }
    }
}

/// One tracked student in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackInput {
    /// The tracker's id for the student.
    pub track_id: u64,
    /// Face box `[left, top, right, bottom]` in frame pixels; the whole frame if none.
    pub face_box: Option<[f32; 4]>,
    /// Body box for the context stream; the whole frame if none.
    pub context_box: Option<[f32; 4]>,
}

/// The classification of one track's full window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackResult {
    /// The track.
    pub track_id: u64,
    /// Raw class scores, in [`crate::pipeline::model::bundle::CLASSES`] order.
    pub logits: [f32; NUM_CLASSES],
    /// Softmax of the logits.
    pub probabilities: [f32; NUM_CLASSES],
}

impl TrackResult {
    /// Index of the most probable class.
    pub fn predicted_class(&self) -> usize {
        argmax(&self.logits).unwrap_or(0)
    }
}

#[derive(Debug)]
struct Slot {
    /// `None` when the slot is free.
    track_id: Option<u64>,
    /// Frame counter value when the track was last pushed.
    last_seen: u64,
    window: FeatureWindow,
}

/// Per-track sliding-window classification of a live stream (see the module docs).
pub struct StreamingClassifier {
    backend: Arc<dyn InferenceBackend>,
    dims: ModelDims,
    stride: usize,
    max_tracks: usize,
    preprocessor: Preprocessor,
    encoder: BatchEncoder,
    /// At most `max_tracks`; grows during warm-up only.
    slots: Vec<Slot>,
    frames_pushed: u64,
    evicted_total: u64,
    /// `[2 * max_tracks, D]`: face then context embedding of each track of the frame.
    embeddings: Vec<f32>,
    /// `[max_tracks, T, D]` each: the windows handed to the head.
    head_face: Vec<f32>,
    head_context: Vec<f32>,
    /// `[max_tracks, C]`.
    logits: Vec<f32>,
    /// (position in the frame's track list, slot) of each window handed to the head.
    ready: Vec<(usize, usize)>,
}

impl StreamingClassifier {
    /// A streaming classifier over `backend`.
    pub fn new(
        backend: Arc<dyn InferenceBackend>,
        config: &StreamingConfig,
    ) -> Result<Self, ClassifyError> {
        let dims = check_classes(backend.as_ref())?;
        let t = dims.frames_per_clip;
        let stride = config.stride.map_or(t, NonZeroUsize::get);
        if stride > t {
            return Err(ClassifyError::Stride {
                stride,
                frames_per_clip: t,
            });
        }
        let max_tracks = config.max_tracks.get();
        let max_batch = config.max_batch.get().min(2 * max_tracks);
        Ok(StreamingClassifier {
            dims,
            stride,
            max_tracks,
            preprocessor: Preprocessor::new(dims.input_size, config.face_margin),
            encoder: BatchEncoder::new(&dims, max_batch),
            slots: Vec::with_capacity(max_tracks),
            frames_pushed: 0,
            evicted_total: 0,
            embeddings: vec![0.0; 2 * max_tracks * dims.embed_dim],
            head_face: vec![0.0; max_tracks * dims.sequence_len()],
            head_context: vec![0.0; max_tracks * dims.sequence_len()],
            logits: vec![0.0; max_tracks * NUM_CLASSES],
            ready: Vec::with_capacity(max_tracks),
            backend,
        })
    }

    /// Time spent in the image encoder's calls since creation: the daemon's `encode` stage,
    /// apart from the preprocessing, windows and head around it.
    pub fn encoder_busy(&self) -> Duration {
        self.encoder.busy
    }

    /// Tracks currently held.
    pub fn tracks(&self) -> usize {
        self.slots.iter().filter(|s| s.track_id.is_some()).count()
    }

    /// Tracks evicted so far to make room for new ones.
    pub fn evicted_total(&self) -> u64 {
        self.evicted_total
    }

    /// Frames of `track_id` held in its window, if the track is known.
    pub fn window_len(&self, track_id: u64) -> Option<usize> {
        self.find(track_id)
            .map(|slot| self.slots[slot].window.len())
    }

    /// Drops a track and its features; returns whether it was known.
    pub fn forget(&mut self, track_id: u64) -> bool {
        match self.find(track_id) {
            Some(slot) => {
                self.slots[slot].track_id = None;
                self.slots[slot].window.clear();
                true
            }
            None => false,
        }
    }

    /// Drops every track and its features (after a pause); the buffers stay allocated.
    pub fn reset(&mut self) {
        for slot in &mut self.slots {
            slot.track_id = None;
            slot.window.clear();
        }
    }

    /// Pushes one frame of one track; returns its result if its window became full.
    pub fn push(
        &mut self,
        frame: RgbFrame<'_>,
        track: TrackInput,
    ) -> Result<Option<TrackResult>, ClassifyError> {
        Ok(self.push_frame(frame, &[track])?.pop())
    }

    /// Pushes one frame with every track seen in it (see the module docs) and returns the
    /// results of the tracks whose window became full, in `tracks` order.
    ///
    /// If preprocessing fails for any track, the error names it and no window changes.
    pub fn push_frame(
        &mut self,
        frame: RgbFrame<'_>,
        tracks: &[TrackInput],
    ) -> Result<Vec<TrackResult>, ClassifyError> {
        if tracks.len() > self.max_tracks {
            return Err(ClassifyError::TooManyTracks {
                found: tracks.len(),
                max: self.max_tracks,
            });
        }
        for (i, track) in tracks.iter().enumerate() {
            if tracks[..i].iter().any(|t| t.track_id == track.track_id) {
                return Err(ClassifyError::DuplicateTrack(track.track_id));
            }
        }
        if tracks.is_empty() {
            return Ok(Vec::new());
        }

        // Encode first: a failure here leaves every window as it was.
        let d = self.dims.embed_dim;
        let embeddings = &mut self.embeddings[..2 * tracks.len() * d];
        let preprocessor = &mut self.preprocessor;
        self.encoder.encode(
            self.backend.as_ref(),
            2 * tracks.len(),
            embeddings,
            |i, pixels| {
                let track = &tracks[i / 2];
                let result = if i % 2 == 0 {
                    preprocessor.face_input(frame, track.face_box.map(pixel_box), pixels)
                } else {
                    preprocessor.context_input(frame, track.context_box.map(pixel_box), pixels)
                };
                result.map_err(|source: PreprocessError| ClassifyError::Track {
                    track_id: track.track_id,
                    source,
                })
            },
        )?;

        self.frames_pushed += 1;
        let now = self.frames_pushed;
        // Mark known tracks as seen before any eviction, so none of this frame is evicted.
        for track in tracks {
            if let Some(slot) = self.find(track.track_id) {
                self.slots[slot].last_seen = now;
            }
        }
        self.ready.clear();
        let seq = self.dims.sequence_len();
        for (j, track) in tracks.iter().enumerate() {
            let slot = match self.find(track.track_id) {
                Some(slot) => slot,
                None => self.allocate(track.track_id, now),
            };
            let window = &mut self.slots[slot].window;
            let features = &self.embeddings[2 * j * d..(2 * j + 2) * d];
            window.push(&features[..d], &features[d..]);
            if window.is_full() {
                let b = self.ready.len();
                window.write_ordered(
                    &mut self.head_face[b * seq..(b + 1) * seq],
                    &mut self.head_context[b * seq..(b + 1) * seq],
                );
                self.ready.push((j, slot));
            }
        }
        if self.ready.is_empty() {
            return Ok(Vec::new());
        }

        let batch = self.ready.len();
        self.backend.run_head(
            &self.head_face[..batch * seq],
            &self.head_context[..batch * seq],
            batch,
            &mut self.logits[..batch * NUM_CLASSES],
        )?;
        let mut results = Vec::with_capacity(batch);
        for (b, &(j, slot)) in self.ready.iter().enumerate() {
            self.slots[slot].window.discard_oldest(self.stride);
            let mut logits = [0.0; NUM_CLASSES];
            logits.copy_from_slice(&self.logits[b * NUM_CLASSES..(b + 1) * NUM_CLASSES]);
            results.push(TrackResult {
                track_id: tracks[j].track_id,
                logits,
                probabilities: softmax(&logits),
            });
        }
        Ok(results)
    }

    fn find(&self, track_id: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.track_id == Some(track_id))
    }

    /// A slot for a new track: a free one, a new one while under `max_tracks`, or the one
    /// unseen for longest (evicted). Tracks seen at `now` are never evicted; one always
    /// remains because a frame carries at most `max_tracks` tracks.
    fn allocate(&mut self, track_id: u64, now: u64) -> usize {
        let slot = if let Some(free) = self.slots.iter().position(|s| s.track_id.is_none()) {
            free
        } else if self.slots.len() < self.max_tracks {
            let t = NonZeroUsize::new(self.dims.frames_per_clip).expect("checked by the bundle");
            let d = NonZeroUsize::new(self.dims.embed_dim).expect("checked by the bundle");
            self.slots.push(Slot {
                track_id: None,
                last_seen: 0,
                window: FeatureWindow::new(t, d),
            });
            self.slots.len() - 1
        } else {
            let stalest = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.last_seen < now)
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(i, _)| i)
                .expect("a frame carries at most max_tracks tracks");
            tracing::debug!(evicted = ?self.slots[stalest].track_id, track_id, "track slots full");
            self.evicted_total += 1;
            self.slots[stalest].window.clear();
            stalest
        };
        self.slots[slot].track_id = Some(track_id);
        self.slots[slot].last_seen = now;
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] == 0.0);
        let p = softmax(&[0.1f32, -2.0, 3.5, 0.0, 1.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&p), Some(2));
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, 1.0, 0.0]), Some(1));
        assert_eq!(argmax(&[0.0, f32::NAN, -1.0]), Some(0));
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn coarse_label_follows_the_top_class() {
        use CoarseLabel::{Distracted, Engaged};
        let mapping = [Engaged, Engaged, Engaged, Engaged, Distracted];
        assert_eq!(
            coarse_label(&[0.1, 0.1, 0.1, 0.1, 0.6], &mapping),
            Distracted
        );
        assert_eq!(coarse_label(&[0.3, 0.1, 0.1, 0.2, 0.3], &mapping), Engaged);
    }

    /// A backend whose embedding is the mean of each image plane plus padding, and whose
    /// logits are sums of the window: enough to check plumbing, batching and order.
    struct FakeBackend {
        dims: ModelDims,
        encoder_batches: Mutex<Vec<usize>>,
        head_batches: Mutex<Vec<usize>>,
    }

    impl FakeBackend {
        fn new() -> Self {
            FakeBackend {
                dims: ModelDims {
                    input_size: 4,
                    frames_per_clip: 3,
                    embed_dim: 4,
                    num_classes: 5,
                },
                encoder_batches: Mutex::default(),
                head_batches: Mutex::default(),
            }
        }
    }

    impl InferenceBackend for FakeBackend {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn load_face_detector(
            &self,
            bundle: &crate::pipeline::model::bundle::Bundle,
        ) -> Result<
            std::sync::Arc<dyn crate::pipeline::model::backend::FaceDetectorNetwork>,
            crate::pipeline::model::backend::BackendError,
        > {
            // The classifier tests never detect faces.
            Err(crate::pipeline::model::backend::BackendError::Tract(
                crate::pipeline::error::BundleError::NoFaceDetector {
                    dir: bundle.dir().to_owned(),
                },
            ))
        }
        fn dims(&self) -> ModelDims {
            self.dims
        }
        fn encode_images(
            &self,
            pixels: &[f32],
            batch: usize,
            embeddings: &mut [f32],
        ) -> Result<(), InferenceError> {
            crate::pipeline::model::backend::check_len(
                "pixel",
                pixels.len(),
                batch,
                self.dims.image_len(),
            )?;
            self.encoder_batches.lock().unwrap().push(batch);
            for (image, out) in pixels.chunks(48).zip(embeddings.chunks_mut(4)) {
                for (c, plane) in image.chunks(16).enumerate() {
                    out[c] = plane.iter().sum::<f32>() / 16.0;
                }
                out[3] = 1.0;
            }
            Ok(())
        }
        fn run_head(
            &self,
            face: &[f32],
            context: &[f32],
            batch: usize,
            logits: &mut [f32],
        ) -> Result<(), InferenceError> {
            self.head_batches.lock().unwrap().push(batch);
            for b in 0..batch {
                let f = &face[b * 12..(b + 1) * 12];
                let c = &context[b * 12..(b + 1) * 12];
                let l = &mut logits[b * 5..(b + 1) * 5];
                l[0] = f.iter().step_by(4).sum(); // red of the face crops, oldest..newest
                l[1] = c.iter().step_by(4).sum();
                l[2] = f[0]; // red of the oldest face crop
                l[3] = f[8]; // red of the newest face crop
                l[4] = f.iter().skip(3).step_by(4).sum(); // 3.0: all frames present
            }
            Ok(())
        }
    }

    /// A uniform 8x6 frame of grey level `v`.
    fn grey(v: u8) -> Vec<u8> {
        vec![v; 8 * 6 * 3]
    }

    fn frame(pixels: &[u8]) -> RgbFrame<'_> {
        RgbFrame::new(8, 6, pixels).unwrap()
    }

    fn track(track_id: u64) -> TrackInput {
        TrackInput {
            track_id,
            face_box: Some([2.0, 1.0, 6.0, 5.0]),
            context_box: None,
        }
    }

    #[test]
    fn clip_classifier_samples_encodes_in_batches_and_runs_the_head() {
        let backend = Arc::new(FakeBackend::new());
        let mut classifier =
            ClipClassifier::new(backend.clone(), 1, NonZeroUsize::new(4).unwrap()).unwrap();
        let pixels: Vec<Vec<u8>> = (0..6).map(|k| grey(k * 51)).collect();
        let frames: Vec<RgbFrame<'_>> = pixels.iter().map(|p| frame(p)).collect();
        let boxes = vec![Some([1.0, 1.0, 5.0, 5.0]); 6];
        let result = classifier.classify(&frames, &boxes, None).unwrap();
        // F = 6 > T = 3: tick 2, indices 1, 3, 5.
        assert_eq!(result.sampled_indices, [1, 3, 5]);
        // 2T = 6 images in batches of at most 4.
        assert_eq!(*backend.encoder_batches.lock().unwrap(), [4, 2]);
        let level = |k: f32| k * 51.0 / 255.0;
        assert!((result.logits[0] - (level(1.0) + level(3.0) + level(5.0))).abs() < 1e-5);
        assert!((result.logits[2] - level(1.0)).abs() < 1e-6);
        assert_eq!(result.face_features.len(), 12);
        assert_eq!(result.predicted_class(), argmax(&result.logits).unwrap());
        assert!((result.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn clip_classifier_checks_its_inputs() {
        let backend = Arc::new(FakeBackend::new());
        let mut classifier = ClipClassifier::new(backend, 1, DEFAULT_MAX_BATCH).unwrap();
        assert_eq!(
            classifier.classify(&[], &[], None).unwrap_err(),
            ClassifyError::EmptyClip
        );
        let pixels = grey(0);
        let err = classifier
            .classify(&[frame(&pixels)], &[], None)
            .unwrap_err();
        assert_eq!(
            err,
            ClassifyError::FaceBoxCount {
                frames: 1,
                boxes: 0
            }
        );
        let err = classifier
            .classify(&[frame(&pixels)], &[Some([50.0, 50.0, 60.0, 60.0])], None)
            .unwrap_err();
        assert!(
            matches!(err, ClassifyError::Frame { frame_index: 0, .. }),
            "{err}"
        );
    }

    fn streaming(
        stride: Option<usize>,
        max_tracks: usize,
    ) -> (Arc<FakeBackend>, StreamingClassifier) {
        let backend = Arc::new(FakeBackend::new());
        let config = StreamingConfig {
            stride: stride.map(|s| NonZeroUsize::new(s).unwrap()),
            max_tracks: NonZeroUsize::new(max_tracks).unwrap(),
            max_batch: NonZeroUsize::new(16).unwrap(),
            face_margin: 1,
        };
        let classifier = StreamingClassifier::new(backend.clone(), &config).unwrap();
        (backend, classifier)
    }

    #[test]
    fn streaming_emits_every_t_frames_by_default() {
        let (backend, mut classifier) = streaming(None, 4);
        let mut emitted = Vec::new();
        for k in 0..7u8 {
            let pixels = grey(k * 10);
            let results = classifier
                .push_frame(frame(&pixels), &[track(7), track(9)])
                .unwrap();
            emitted.push(results.len());
            for r in &results {
                assert_eq!(r.logits[4], 3.0);
                // The window is the last three frames, oldest first.
                assert!((r.logits[2] - f32::from(k - 2) * 10.0 / 255.0).abs() < 1e-6);
                assert!((r.logits[3] - f32::from(k) * 10.0 / 255.0).abs() < 1e-6);
            }
            if !results.is_empty() {
                assert_eq!([results[0].track_id, results[1].track_id], [7, 9]);
            }
        }
        assert_eq!(emitted, [0, 0, 2, 0, 0, 2, 0]);
        // One encoder call per frame (4 images), one head call per emission (2 windows).
        assert_eq!(*backend.encoder_batches.lock().unwrap(), [4; 7]);
        assert_eq!(*backend.head_batches.lock().unwrap(), [2, 2]);
    }

    #[test]
    fn streaming_stride_one_emits_every_frame_once_full() {
        let (_, mut classifier) = streaming(Some(1), 2);
        let pixels = grey(100);
        let emitted: Vec<usize> = (0..5)
            .map(|_| {
                classifier
                    .push(frame(&pixels), track(1))
                    .unwrap()
                    .map_or(0, |_| 1)
            })
            .collect();
        assert_eq!(emitted, [0, 0, 1, 1, 1]);
    }

    #[test]
    fn stride_longer_than_the_window_is_rejected() {
        let backend = Arc::new(FakeBackend::new());
        let config = StreamingConfig {
            stride: NonZeroUsize::new(4),
            ..StreamingConfig::default()
        };
        let err = StreamingClassifier::new(backend, &config).err().unwrap();
        assert_eq!(
            err,
            ClassifyError::Stride {
                stride: 4,
                frames_per_clip: 3
            }
        );
    }

    #[test]
    fn forget_drops_the_window() {
        let (_, mut classifier) = streaming(None, 2);
        let pixels = grey(1);
        classifier.push(frame(&pixels), track(1)).unwrap();
        classifier.push(frame(&pixels), track(1)).unwrap();
        assert_eq!(classifier.window_len(1), Some(2));
        assert!(classifier.forget(1));
        assert!(!classifier.forget(1));
        assert_eq!(classifier.window_len(1), None);
        assert_eq!(classifier.tracks(), 0);
        classifier.push(frame(&pixels), track(1)).unwrap();
        assert_eq!(classifier.window_len(1), Some(1));
    }

    #[test]
    fn the_stalest_track_is_evicted_when_slots_run_out() {
        let (_, mut classifier) = streaming(None, 2);
        let pixels = grey(1);
        classifier
            .push_frame(frame(&pixels), &[track(1), track(2)])
            .unwrap();
        classifier.push_frame(frame(&pixels), &[track(2)]).unwrap();
        // Track 1 was seen longest ago.
        classifier
            .push_frame(frame(&pixels), &[track(2), track(3)])
            .unwrap();
        assert_eq!(classifier.window_len(1), None);
        // Track 2's third frame filled its window, which emitted and slid by T.
        assert_eq!(classifier.window_len(2), Some(0));
        assert_eq!(classifier.window_len(3), Some(1));
        assert_eq!(classifier.evicted_total(), 1);
        assert_eq!(classifier.tracks(), 2);
    }

    #[test]
    fn bad_frames_are_refused_without_touching_windows() {
        let (_, mut classifier) = streaming(None, 2);
        let pixels = grey(1);
        classifier.push(frame(&pixels), track(1)).unwrap();
        let err = classifier
            .push_frame(frame(&pixels), &[track(1), track(1)])
            .unwrap_err();
        assert_eq!(err, ClassifyError::DuplicateTrack(1));
        let err = classifier
            .push_frame(frame(&pixels), &[track(1), track(2), track(3)])
            .unwrap_err();
        assert_eq!(err, ClassifyError::TooManyTracks { found: 3, max: 2 });
        let outside = TrackInput {
            face_box: Some([100.0, 100.0, 120.0, 120.0]),
            ..track(2)
        };
        let err = classifier
            .push_frame(frame(&pixels), &[track(1), outside])
            .unwrap_err();
        assert!(
            matches!(err, ClassifyError::Track { track_id: 2, .. }),
            "{err}"
        );
        assert_eq!(classifier.window_len(1), Some(1));
        assert_eq!(classifier.window_len(2), None);
    }
}
