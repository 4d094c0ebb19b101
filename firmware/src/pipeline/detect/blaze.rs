//! BlazeFace short-range (MediaPipe), the bundle's face detector network, tiled over the frame.
//!
//! The network sees a 128x128 image and finds faces that fill roughly a fifth to a half of
//! it (it was made for selfies). A classroom frame holds many small faces, so the frame is
//! covered at each configured *tile size* `T` by overlapping square tiles of `T` frame
//! pixels, each scaled to 128x128: the frame is resized once per tile size by `128 / T`
//! (Pillow-exact bilinear, as the crops) and cut into 128-pixel tiles that overlap by 32
//! pixels (a quarter). A face whose side is at most a quarter of `T` is therefore whole in
//! some tile, and tile sizes that double (112, 224, 448, 896 by default) cover every face from
//! about a sixth of the smallest tile upwards. Detections of all tiles and sizes are merged
//! by greedy non-maximum suppression, which also drops the smaller boxes of faces cut by a
//! tile edge. (Dropping every box that touches an inner tile edge instead lost two more of
//! the 29 faces of the group photo scaled to 1920x1080; the tests' figures are with this
//! scheme.)
//!
//! Decoding follows MediaPipe's `face_detection_short_range` graph: 896 SSD anchors of fixed
//! size 1 (stride 8: 16x16 cells x 2; stride 16: 8x8 cells x 6), box centre = anchor +
//! offset / 128, size = regressed size / 128, score = sigmoid(logit clipped to +-100).
//! The six keypoints of the 16 regressed values are not used.
//!
//! The second look: a tile shows a hand, a glass or a bit of background cut out of its
//! surroundings, and the network takes some for faces (scores 0.6-0.75 on the face-api
//! photographs). Each face the first look is not sure of (below `sure_score`) is shown to the
//! network once more, centred, its side [`SECOND_LOOK_FACE_SHARE`] of the input, with its
//! surroundings, and kept only when a box on it then scores `second_look_threshold`. On the
//! evaluation set (`firmware/tests/detect/evaluation.rs`) this dropped 17 of 19 false faces
//! and no face at 0.55; 0.52 (the default) also keeps one face of 32-63 px whose second look
//! scored 0.52-0.55 (98 of 103 faces, 2 false); 0 turns it off.
//!
//! Between full looks the daemon looks only near the tracked faces
//! ([`FaceDetector::detect_near`]): each expected box shown alone, centred, at the second
//! look's scale (one network input per face instead of a frame's hundreds of tiles).
//!
//! The network runs on the model's inference backend ([`crate::pipeline::model::backend::FaceDetectorNetwork`]):
//! tract or ONNX Runtime with the same providers as the image encoder, as many tiles per call
//! as the backend takes best (one on tract, eight on ONNX Runtime).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{DetectError, Detection, FaceDetector};
use crate::pipeline::frame::Frame;
use crate::pipeline::model::backend::FaceDetectorNetwork;
use crate::pipeline::preprocess::resample::{PillowBilinear, Rect};
use crate::pipeline::settings::{check, Issues};
use crate::pipeline::track::iou;

/// Side of the network's square input.
pub const INPUT_SIZE: usize = 128;
/// Anchors (candidate boxes) per input.
pub const NUM_ANCHORS: usize = 896;
/// Regressed values per anchor: box centre offset, size, then six keypoints.
pub const REGRESSOR_LEN: usize = 16;

/// Overlap of neighbouring tiles, in network pixels (a quarter of a tile).
const TILE_OVERLAP: usize = 32;
/// Share of the input's side a face's longer side takes in the second look: the scale at
/// which the short-range network, made for selfies, is surest.
pub const SECOND_LOOK_FACE_SHARE: f32 = 0.3;
/// Overlap (IoU) a second-look box needs with the face it looks at.
const SECOND_LOOK_MIN_IOU: f32 = 0.4;
/// Smallest and largest accepted tile size, in frame pixels.
const TILE_SIZE_RANGE: std::ops::RangeInclusive<u32> = 32..=4096;

/// Settings of the BlazeFace detector: `[detect.blaze]` of `caerd`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlazeConfig {
    /// Tile sides in frame pixels, 32 to 4096, each scaled to 128x128. Faces of about a
    /// sixth to a quarter of a tile are found best; smaller tiles find smaller faces and cost
    /// more (tiles grow with the square of `frame / tile`).
    pub tile_sizes: Vec<u32>,
    /// Score a face needs, between 0 and 1. MediaPipe uses 0.5; 0.6 keeps group photos free
    /// of false positives at the same recall.
    pub score_threshold: f32,
    /// Overlap (IoU) above which the weaker of two boxes is dropped, (0, 1].
    pub nms_iou: f32,
    /// The second look: each face found is shown to the network again, centred, its side
    /// [`SECOND_LOOK_FACE_SHARE`] of the input, and kept only when the network then scores a
    /// box on it at least this, between 0 and 1; 0 turns the second look off. A false face
    /// from a tile (a hand, a glass, a bit of background) rarely holds up once centred with
    /// its surroundings; a face does.
    pub second_look_threshold: f32,
    /// A face the first look scores at least this is kept without a second look, (0, 1].
    pub sure_score: f32,
}

impl Default for BlazeConfig {
    fn default() -> Self {
        BlazeConfig {
            tile_sizes: vec![112, 224, 448, 896],
            score_threshold: 0.6,
            nms_iou: 0.3,
            second_look_threshold: 0.52,
            sure_score: 0.8,
        }
    }
}

impl BlazeConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        let sizes = &self.tile_sizes;
        if sizes.is_empty() || !sizes.iter().all(|s| TILE_SIZE_RANGE.contains(s)) {
            v.push(
                "tile_sizes",
                format!("is {sizes:?}; it must list 1 to 8 sizes, each from 32 to 4096"),
            );
        } else if sizes.len() > 8 {
            v.push(
                "tile_sizes",
                format!("lists {} sizes; at most 8", sizes.len()),
            );
        }
        if !(self.score_threshold > 0.0 && self.score_threshold < 1.0) {
            v.push(
                "score_threshold",
                format!("is {}; it must be between 0 and 1", self.score_threshold),
            );
        }
        v.positive_up_to("nms_iou", f64::from(self.nms_iou), 1.0);
        v.positive_up_to("sure_score", f64::from(self.sure_score), 1.0);
        if !(self.second_look_threshold >= 0.0 && self.second_look_threshold < 1.0) {
            v.push(
                "second_look_threshold",
                format!(
                    "is {}; it must be from 0 (off) to below 1",
                    self.second_look_threshold
                ),
            );
        }
    }
}

/// BlazeFace short-range over tiles of the frame (see the module docs).
pub struct BlazeDetector {
    network: Arc<dyn FaceDetectorNetwork>,
    config: BlazeConfig,
    /// Anchor centres `[x, y]` in input units (0 to 1).
    anchors: Vec<[f32; 2]>,
    resizer: PillowBilinear,
    /// The frame at one tile size's scale, RGB8, at least 128x128 (zero-padded).
    scaled: Vec<u8>,
    input: Vec<f32>,
    regressors: Vec<f32>,
    logits: Vec<f32>,
}

impl std::fmt::Debug for BlazeDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlazeDetector")
            .field("network", &self.network)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BlazeDetector {
    /// The detector running `network` (from [`crate::pipeline::model::backend::InferenceBackend::load_face_detector`]).
    pub fn new(
        network: Arc<dyn FaceDetectorNetwork>,
        config: BlazeConfig,
    ) -> Result<Self, DetectError> {
        check(|v| config.issues(v)).map_err(DetectError::Settings)?;
        Ok(BlazeDetector {
            network,
            config,
            anchors: anchors(),
            resizer: PillowBilinear::default(),
            scaled: Vec::new(),
            input: Vec::new(),
            regressors: Vec::new(),
            logits: Vec::new(),
        })
    }

    /// Appends the faces found with tiles of `tile` frame pixels.
    fn detect_at(
        &mut self,
        frame: &Frame,
        tile: u32,
        found: &mut Vec<Detection>,
    ) -> Result<(), DetectError> {
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let scale = INPUT_SIZE as f64 / f64::from(tile);
        let scaled_w = ((width as f64 * scale).round() as usize).max(1);
        let scaled_h = ((height as f64 * scale).round() as usize).max(1);
        // Frames smaller than one tile are padded (black) up to 128x128.
        let (canvas_w, canvas_h) = (scaled_w.max(INPUT_SIZE), scaled_h.max(INPUT_SIZE));
        self.scaled.clear();
        self.scaled.resize(canvas_w * canvas_h * 3, 0);
        self.resizer.resize(
            frame.image.as_raw(),
            width,
            Rect {
                left: 0,
                top: 0,
                width,
                height,
            },
            &mut self.scaled,
            canvas_w,
            Rect {
                left: 0,
                top: 0,
                width: scaled_w,
                height: scaled_h,
            },
        );
        // Boxes in scaled pixels are mapped back with these factors (exact per axis).
        let (back_x, back_y) = (
            width as f32 / scaled_w as f32,
            height as f32 / scaled_h as f32,
        );
        let threshold_logit = logit(self.config.score_threshold);
        let tiles: Vec<(usize, usize)> = tile_origins(canvas_h)
            .flat_map(|top| tile_origins(canvas_w).map(move |left| (left, top)))
            .collect();
        let per_call = self.network.max_batch().max(1);
        let image_len = 3 * INPUT_SIZE * INPUT_SIZE;
        for batch in tiles.chunks(per_call) {
            let n = batch.len();
            self.make_room(n);
            for (k, &(left, top)) in batch.iter().enumerate() {
                fill_input(
                    &self.scaled,
                    canvas_w,
                    left,
                    top,
                    &mut self.input[k * image_len..][..image_len],
                );
            }
            self.network
                .run(&self.input, n, &mut self.regressors, &mut self.logits)
                .map_err(DetectError::Network)?;
            for (k, &(left, top)) in batch.iter().enumerate() {
                let view = View {
                    left: left as f32 * back_x,
                    top: top as f32 * back_y,
                    per_x: back_x,
                    per_y: back_y,
                };
                for (raw, seen) in self.decoded(k, threshold_logit) {
                    push_in_frame(
                        found,
                        view.to_frame(&seen),
                        sigmoid(raw),
                        width as f32,
                        height as f32,
                    );
                }
            }
        }
        Ok(())
    }
}

impl FaceDetector for BlazeDetector {
    fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, DetectError> {
        if frame.width() == 0 || frame.height() == 0 {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for i in 0..self.config.tile_sizes.len() {
            self.detect_at(frame, self.config.tile_sizes[i], &mut found)?;
        }
        let found = suppress_overlaps(found, self.config.nms_iou);
        if self.config.second_look_threshold > 0.0 {
            self.second_look(frame, found)
        } else {
            Ok(found)
        }
    }

    fn detect_near(
        &mut self,
        frame: &Frame,
        regions: &[[f32; 4]],
    ) -> Result<Vec<Detection>, DetectError> {
        if frame.width() == 0 || frame.height() == 0 {
            return Ok(Vec::new());
        }
        self.look_near(frame, regions)
    }
}

impl BlazeDetector {
    /// The faces of `found` that hold up when shown to the network again, centred at the
    /// scale it likes best, each with its second score.
    fn second_look(
        &mut self,
        frame: &Frame,
        found: Vec<Detection>,
    ) -> Result<Vec<Detection>, DetectError> {
        let threshold_logit = logit(self.config.second_look_threshold);
        let per_call = self.network.max_batch().max(1);
        let (mut kept, unsure): (Vec<Detection>, Vec<Detection>) = found
            .into_iter()
            .partition(|d| d.score >= self.config.sure_score);
        for batch in unsure.chunks(per_call) {
            let boxes: Vec<[f32; 4]> = batch.iter().map(|d| d.bbox).collect();
            let views = self.run_views(frame, &boxes)?;
            for (k, (d, view)) in batch.iter().zip(&views).enumerate() {
                // The face as the view shows it, in input pixels.
                let face = view.to_input(&d.bbox);
                let best = self
                    .decoded(k, threshold_logit)
                    .filter(|(_, seen)| iou(seen, &face) >= SECOND_LOOK_MIN_IOU)
                    .map(|(raw, _)| raw)
                    .max_by(f32::total_cmp);
                if let Some(raw) = best {
                    kept.push(Detection {
                        bbox: d.bbox,
                        score: sigmoid(raw),
                    });
                }
            }
        }
        Ok(kept)
    }

    /// The faces near `regions` (boxes where faces are expected, e.g. the tracker's
    /// predictions), each region shown to the network alone, centred, at the second look's
    /// scale; boxes scoring `score_threshold`, overlaps suppressed.
    fn look_near(
        &mut self,
        frame: &Frame,
        regions: &[[f32; 4]],
    ) -> Result<Vec<Detection>, DetectError> {
        let (width, height) = (frame.width() as f32, frame.height() as f32);
        let threshold_logit = logit(self.config.score_threshold);
        let usable: Vec<[f32; 4]> = regions
            .iter()
            .filter(|r| r.iter().all(|v| v.is_finite()) && r[2] > r[0] && r[3] > r[1])
            .copied()
            .collect();
        let per_call = self.network.max_batch().max(1);
        let mut found = Vec::new();
        for batch in usable.chunks(per_call) {
            let views = self.run_views(frame, batch)?;
            for (k, view) in views.iter().enumerate() {
                for (raw, seen) in self.decoded(k, threshold_logit) {
                    push_in_frame(
                        &mut found,
                        view.to_frame(&seen),
                        sigmoid(raw),
                        width,
                        height,
                    );
                }
            }
        }
        Ok(suppress_overlaps(found, self.config.nms_iou))
    }

    /// Runs the network once on the views centred on `boxes` (at most one batch), input `k`
    /// showing `boxes[k]`; returns the views.
    fn run_views(&mut self, frame: &Frame, boxes: &[[f32; 4]]) -> Result<Vec<View>, DetectError> {
        let n = boxes.len();
        self.make_room(n);
        let views = boxes
            .iter()
            .enumerate()
            .map(|(k, b)| self.fill_view(frame, b, k))
            .collect();
        self.network
            .run(&self.input, n, &mut self.regressors, &mut self.logits)
            .map_err(DetectError::Network)?;
        Ok(views)
    }

    /// Sizes the network's buffers for `n` inputs.
    fn make_room(&mut self, n: usize) {
        self.input.resize(n * 3 * INPUT_SIZE * INPUT_SIZE, 0.0);
        self.regressors.resize(n * NUM_ANCHORS * REGRESSOR_LEN, 0.0);
        self.logits.resize(n * NUM_ANCHORS, 0.0);
    }

    /// Fills input `k` with the square view centred on `bbox` whose side makes the box's
    /// longer side [`SECOND_LOOK_FACE_SHARE`] of the input; what lies outside the frame is
    /// black.
    fn fill_view(&mut self, frame: &Frame, bbox: &[f32; 4], k: usize) -> View {
        let (width, height) = (frame.width() as f32, frame.height() as f32);
        let image_len = 3 * INPUT_SIZE * INPUT_SIZE;
        let [l, t, r, b] = *bbox;
        let side = ((r - l).max(b - t) / SECOND_LOOK_FACE_SHARE).max(1.0);
        let (left, top) = ((l + r - side) / 2.0, (t + b - side) / 2.0);
        let scale = INPUT_SIZE as f32 / side;
        // The part of the view inside the frame, in whole frame pixels, and where it lands
        // in the input.
        let (fl, ft) = (left.max(0.0).floor(), top.max(0.0).floor());
        let (fr, fb) = (
            (left + side).min(width).ceil(),
            (top + side).min(height).ceil(),
        );
        self.scaled.clear();
        self.scaled.resize(image_len, 0);
        let to_l = (((fl - left) * scale).round() as usize).min(INPUT_SIZE - 1);
        let to_t = (((ft - top) * scale).round() as usize).min(INPUT_SIZE - 1);
        let to_r = (((fr - left) * scale).round() as usize).clamp(to_l + 1, INPUT_SIZE);
        let to_b = (((fb - top) * scale).round() as usize).clamp(to_t + 1, INPUT_SIZE);
        if fr > fl && fb > ft {
            self.resizer.resize(
                frame.image.as_raw(),
                frame.width() as usize,
                Rect {
                    left: fl as usize,
                    top: ft as usize,
                    width: (fr - fl) as usize,
                    height: (fb - ft) as usize,
                },
                &mut self.scaled,
                INPUT_SIZE,
                Rect {
                    left: to_l,
                    top: to_t,
                    width: to_r - to_l,
                    height: to_b - to_t,
                },
            );
        }
        fill_input(
            &self.scaled,
            INPUT_SIZE,
            0,
            0,
            &mut self.input[k * image_len..][..image_len],
        );
        View {
            left,
            top,
            per_x: 1.0 / scale,
            per_y: 1.0 / scale,
        }
    }

    /// The boxes of input `k` of the last run whose logit is at least `threshold_logit`:
    /// `(logit, [left, top, right, bottom] in input pixels)`, decoded as MediaPipe does.
    fn decoded(
        &self,
        k: usize,
        threshold_logit: f32,
    ) -> impl Iterator<Item = (f32, [f32; 4])> + '_ {
        let logits = &self.logits[k * NUM_ANCHORS..][..NUM_ANCHORS];
        let regressors = &self.regressors[k * NUM_ANCHORS * REGRESSOR_LEN..];
        let size = INPUT_SIZE as f32;
        logits
            .iter()
            .enumerate()
            .filter(move |(_, raw)| **raw >= threshold_logit)
            .map(move |(i, &raw)| {
                let r = &regressors[i * REGRESSOR_LEN..][..4];
                let [ax, ay] = self.anchors[i];
                let (cx, cy) = (ax * size + r[0], ay * size + r[1]);
                (
                    raw,
                    [
                        cx - r[2] / 2.0,
                        cy - r[3] / 2.0,
                        cx + r[2] / 2.0,
                        cy + r[3] / 2.0,
                    ],
                )
            })
    }
}

/// Where an input shows the frame: frame x = `left` + input x * `per_x` (y likewise).
#[derive(Debug, Clone, Copy)]
struct View {
    left: f32,
    top: f32,
    per_x: f32,
    per_y: f32,
}

impl View {
    fn to_frame(self, b: &[f32; 4]) -> [f32; 4] {
        [
            self.left + b[0] * self.per_x,
            self.top + b[1] * self.per_y,
            self.left + b[2] * self.per_x,
            self.top + b[3] * self.per_y,
        ]
    }

    fn to_input(self, b: &[f32; 4]) -> [f32; 4] {
        [
            (b[0] - self.left) / self.per_x,
            (b[1] - self.top) / self.per_y,
            (b[2] - self.left) / self.per_x,
            (b[3] - self.top) / self.per_y,
        ]
    }
}

/// Appends `bbox` clipped to the frame, unless nothing of it is left.
fn push_in_frame(found: &mut Vec<Detection>, bbox: [f32; 4], score: f32, width: f32, height: f32) {
    let bbox = [
        bbox[0].clamp(0.0, width),
        bbox[1].clamp(0.0, height),
        bbox[2].clamp(0.0, width),
        bbox[3].clamp(0.0, height),
    ];
    if bbox[2] > bbox[0] && bbox[3] > bbox[1] {
        found.push(Detection { bbox, score });
    }
}

/// The 128x128 tile at (`left`, `top`) of the scaled frame (RGB8, `canvas_w` pixels per
/// row) into `out` as `[3, 128, 128]` in `[-1, 1]`.
fn fill_input(scaled: &[u8], canvas_w: usize, left: usize, top: usize, out: &mut [f32]) {
    let plane = INPUT_SIZE * INPUT_SIZE;
    for y in 0..INPUT_SIZE {
        let row = &scaled[((top + y) * canvas_w + left) * 3..][..INPUT_SIZE * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                out[c * plane + y * INPUT_SIZE + x] = f32::from(v) / 127.5 - 1.0;
            }
        }
    }
}

/// Tile origins along a side of `len` (at least [`INPUT_SIZE`]) pixels: every
/// `INPUT_SIZE - TILE_OVERLAP`, the last one flush with the end.
fn tile_origins(len: usize) -> impl Iterator<Item = usize> {
    let step = INPUT_SIZE - TILE_OVERLAP;
    let last = len - INPUT_SIZE;
    let count = last.div_ceil(step) + 1;
    (0..count).map(move |i| (i * step).min(last))
}

/// MediaPipe's short-range anchors: centres in input units, in the network's output order.
fn anchors() -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(NUM_ANCHORS);
    for (stride, per_cell) in [(8, 2), (16, 6)] {
        let cells = INPUT_SIZE / stride;
        for y in 0..cells {
            for x in 0..cells {
                let centre = [
                    (x as f32 + 0.5) / cells as f32,
                    (y as f32 + 0.5) / cells as f32,
                ];
                out.extend(std::iter::repeat_n(centre, per_cell));
            }
        }
    }
    debug_assert_eq!(out.len(), NUM_ANCHORS);
    out
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-100.0, 100.0)).exp())
}

/// The logit whose sigmoid is `p` (0 < p < 1).
fn logit(p: f32) -> f32 {
    (p / (1.0 - p)).ln()
}

/// Greedy non-maximum suppression: the strongest box wins, boxes overlapping a kept box by
/// more than `max_iou` go.
fn suppress_overlaps(mut found: Vec<Detection>, max_iou: f32) -> Vec<Detection> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in found {
        if kept.iter().all(|k| iou(&k.bbox, &d.bbox) <= max_iou) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_side_with_the_last_flush() {
        assert_eq!(tile_origins(128).collect::<Vec<_>>(), [0]);
        assert_eq!(tile_origins(200).collect::<Vec<_>>(), [0, 72]);
        assert_eq!(tile_origins(224).collect::<Vec<_>>(), [0, 96]);
        assert_eq!(tile_origins(225).collect::<Vec<_>>(), [0, 96, 97]);
        for len in 128..700 {
            let o: Vec<_> = tile_origins(len).collect();
            assert_eq!(o[0], 0);
            assert_eq!(*o.last().unwrap(), len - INPUT_SIZE);
            // Neighbours overlap by at least TILE_OVERLAP.
            assert!(o
                .windows(2)
                .all(|w| w[1] > w[0] && w[1] - w[0] <= INPUT_SIZE - TILE_OVERLAP));
        }
    }

    #[test]
    fn anchors_follow_mediapipe_order() {
        let a = anchors();
        assert_eq!(a.len(), NUM_ANCHORS);
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], [1.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[895], [7.5 / 8.0, 7.5 / 8.0]);
    }

    #[test]
    fn suppression_keeps_the_strongest_of_overlapping_boxes() {
        let d = |l: f32, score| Detection {
            bbox: [l, 0.0, l + 10.0, 10.0],
            score,
        };
        let kept = suppress_overlaps(vec![d(0.0, 0.7), d(1.0, 0.9), d(30.0, 0.65)], 0.3);
        assert_eq!(kept, vec![d(1.0, 0.9), d(30.0, 0.65)]);
    }

    #[test]
    fn threshold_logit_is_the_inverse_of_the_sigmoid() {
        for p in [0.1, 0.5, 0.6, 0.9] {
            assert!((sigmoid(logit(p)) - p).abs() < 1e-6);
        }
    }
}
