//! From a list entry to what the model needs: the decoded frames and their boxes.
//!
//! Only the frames the model sees are decoded: the `T` test-time sampled frames of a long
//! clip (all frames of a clip of `T` frames or fewer). They are handed on in order, so that
//! sampling them again picks each exactly once ([`LoadedClip::positions`]).
//!
//! Boxes, per stream:
//!
//! - **Face**: from the face box file when one is given (a frame without an entry uses the
//!   whole frame, as the reference does); otherwise from the firmware's own face detector
//!   (the bundle's BlazeFace, [`caer::pipeline::detect::BlazeDetector`], by default, or
//!   [`caer::pipeline::detect::SeetaDetector`]) and tracker ([`caer::pipeline::track::Tracker`]) run over the
//!   decoded frames, keeping the track seen in most frames (the clip's student; ties go to
//!   the larger face). A frame where that track was missed takes its nearest box in time.
//!   With `--detector none`, whole frames.
//! - **Body**: from the body box file when one is given; otherwise, when the faces came from
//!   the detector, the union over the clip of the context boxes that the daemon derives from
//!   each face box ([`caer::pipeline::crop::ContextBoxes`]); otherwise the whole frame (reference).

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caer::pipeline::crop::{ContextBoxes, ContextConfig};
use caer::pipeline::detect::{
    BlazeConfig, BlazeDetector, FaceDetector, SeetaConfig, SeetaDetector,
};
use caer::pipeline::frame::Frame;
use caer::pipeline::model::backend::FaceDetectorNetwork;
use caer::pipeline::model::sampling::sample_indices;
use caer::pipeline::preprocess::{pixel_box, PixelBox, RgbFrame};
use caer::pipeline::track::{Tracker, TrackerConfig};
use serde::{Deserialize, Serialize};

use crate::dataset::{frame_files, BoxFile, ClipList, ListEntry};
use crate::error::{ClipError, Error};

/// Where a stream's boxes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoxSource {
    /// The dataset's box file.
    Files,
    /// The firmware's face detector and tracker (bodies: context boxes around the faces).
    Detector,
    /// No boxes: the whole frame.
    WholeFrame,
}

impl BoxSource {
    /// The name used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            BoxSource::Files => "files",
            BoxSource::Detector => "detector",
            BoxSource::WholeFrame => "whole-frame",
        }
    }
}

/// How to find face boxes when no face box file is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetectorChoice {
    /// The bundle's BlazeFace network (the daemon's `detect.kind = "blaze"`), with the
    /// daemon's default settings.
    #[default]
    Blaze,
    /// SeetaFace frontal detector (the daemon's `detect.kind = "seeta"`), with its default
    /// settings.
    Seeta,
    /// No detection: whole frames, as the reference without boxes.
    None,
}

/// Loads clips: lists and decodes frames, reads or finds boxes.
pub struct ClipLoader {
    frames_per_clip: usize,
    face_boxes: Option<BoxFile>,
    body_boxes: Option<BoxFile>,
    detector: Option<Box<dyn FaceDetector>>,
    context: ContextBoxes,
}

impl std::fmt::Debug for ClipLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipLoader")
            .field("frames_per_clip", &self.frames_per_clip)
            .field("face_source", &self.face_source())
            .field("body_source", &self.body_source())
            .finish_non_exhaustive()
    }
}

impl ClipLoader {
    /// A loader for a model of `frames_per_clip` frames; the detector is built only when
    /// there is no face box file and `detector` asks for one. `network` is the bundle's face
    /// detector network, called for only then with [`DetectorChoice::Blaze`].
    pub fn new(
        frames_per_clip: usize,
        face_boxes: Option<BoxFile>,
        body_boxes: Option<BoxFile>,
        detector: DetectorChoice,
        network: impl FnOnce() -> Result<Arc<dyn FaceDetectorNetwork>, Error>,
    ) -> Result<ClipLoader, Error> {
        let detector: Option<Box<dyn FaceDetector>> = match (&face_boxes, detector) {
            (None, DetectorChoice::Blaze) => Some(Box::new(
                BlazeDetector::new(network()?, BlazeConfig::default()).map_err(Error::Detector)?,
            )),
            (None, DetectorChoice::Seeta) => Some(Box::new(
                SeetaDetector::new(SeetaConfig::default()).map_err(Error::Detector)?,
            )),
            _ => None,
        };
        let context = ContextBoxes::new(ContextConfig::default())
            .expect("the default context settings are valid");
        Ok(ClipLoader {
            frames_per_clip,
            face_boxes,
            body_boxes,
            detector,
            context,
        })
    }

    /// Where face boxes come from.
    pub fn face_source(&self) -> BoxSource {
        match (&self.face_boxes, &self.detector) {
            (Some(_), _) => BoxSource::Files,
            (None, Some(_)) => BoxSource::Detector,
            (None, None) => BoxSource::WholeFrame,
        }
    }

    /// Where body boxes come from.
    pub fn body_source(&self) -> BoxSource {
        match (&self.body_boxes, self.face_source()) {
            (Some(_), _) => BoxSource::Files,
            (None, BoxSource::Detector) => BoxSource::Detector,
            _ => BoxSource::WholeFrame,
        }
    }

    /// The face box file, if any.
    pub fn face_box_file(&self) -> Option<&BoxFile> {
        self.face_boxes.as_ref()
    }

    /// The body box file, if any.
    pub fn body_box_file(&self) -> Option<&BoxFile> {
        self.body_boxes.as_ref()
    }

    /// Lists, checks and decodes the frames of `entry` that the model sees, with their boxes.
    pub fn load(&mut self, list: &ClipList, entry: &ListEntry) -> Result<LoadedClip, ClipError> {
        let files = frame_files(&list.frame_dir(entry), entry.num_frames)?;
        let t = self.frames_per_clip;
        // As the official loader: the list's num_frames drives the sampling, whose indices
        // point into the folder's sorted listing (`frame_files` checked it is long enough).
        let sampled =
            sample_indices(entry.num_frames, t).expect("a listed clip has frames and T > 0");
        let decoded = frames_to_decode(entry.num_frames, &sampled, t);

        // Box entries first: a malformed one skips the clip before any decoding.
        let face_from_file = match &self.face_boxes {
            Some(boxes) => Some(
                decoded
                    .iter()
                    .map(|&i| boxes.face(&entry.frame_dir, &file_name(&files[i])))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let body_from_file = match &self.body_boxes {
            Some(boxes) => boxes.body(&entry.frame_dir)?,
            None => None,
        };

        let start = Instant::now();
        let mut frames = Vec::with_capacity(decoded.len());
        for (sequence, &i) in decoded.iter().enumerate() {
            frames.push(Frame::new(decode(&files[i])?, sequence as u64));
        }
        let decode_time = start.elapsed();

        let start = Instant::now();
        let (face_boxes, detected_body) = match face_from_file {
            Some(boxes) => (boxes, None),
            None => match &mut self.detector {
                Some(detector) => {
                    let found =
                        detect_clip(detector.as_mut(), &self.context, &frames, &decoded, &files)?;
                    (found.0, found.1)
                }
                None => (vec![None; frames.len()], None),
            },
        };
        let detect_time = start.elapsed();
        let body_box = if self.body_boxes.is_some() {
            body_from_file
        } else {
            detected_body
        };

        Ok(LoadedClip {
            frame_dir: list.frame_dir(entry),
            frame_files: files,
            sampled_indices: sampled,
            frame_indices: decoded,
            frames,
            face_boxes,
            body_box,
            face_source: self.face_source(),
            body_source: self.body_source(),
            decode: decode_time,
            detect: detect_time,
        })
    }
}

/// Which frames to decode: the sampled ones when handing exactly those on reproduces the
/// sampling (always the case for `F > T`, whose sampled indices are distinct), else all.
fn frames_to_decode(num_frames: usize, sampled: &[usize], t: usize) -> Vec<usize> {
    let mut unique = sampled.to_vec();
    unique.dedup();
    let resampled = sample_indices(unique.len(), t)
        .map(|positions| positions.iter().map(|&p| unique[p]).collect::<Vec<_>>());
    if resampled.as_deref() == Some(sampled) {
        unique
    } else {
        (0..num_frames).collect()
    }
}

/// A frame as the reference decodes it (JPEG through libjpeg-turbo, like Pillow).
fn decode(path: &Path) -> Result<image::RgbImage, ClipError> {
    caer::pipeline::decode::file_to_rgb(path).map_err(|source| ClipError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// Face boxes per decoded frame and the clip's body box.
type ClipBoxes = (Vec<Option<PixelBox>>, Option<PixelBox>);

/// A frame file's name, as the official loader's `os.path.basename` gives it.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Face boxes per frame and the clip's body box, from the detector and the tracker.
fn detect_clip(
    detector: &mut dyn FaceDetector,
    context: &ContextBoxes,
    frames: &[Frame],
    decoded: &[usize],
    files: &[PathBuf],
) -> Result<ClipBoxes, ClipError> {
    // Sampled frames lie several frames apart: a low IoU threshold, every detection a track
    // at once, and no track ended within the clip.
    let mut tracker = Tracker::new(TrackerConfig {
        iou_threshold: 0.1,
        min_hits: NonZeroU32::MIN,
        max_misses: u32::try_from(frames.len()).unwrap_or(u32::MAX),
        max_tracks: NonZeroUsize::new(64).expect("64 is not zero"),
        velocity_smoothing: 0.5,
        // Clips are labelled by hand: whatever the detector finds in them is a face.
        min_motion: 0.0,
    })
    .expect("valid tracker settings");
    // (frame position, track id, box) of every tracked face.
    let mut seen: Vec<(usize, u64, [f32; 4])> = Vec::new();
    for (k, frame) in frames.iter().enumerate() {
        let detections = detector.detect(frame).map_err(|source| ClipError::Detect {
            path: files[decoded[k]].clone(),
            source,
        })?;
        for face in tracker.update(&detections).faces {
            seen.push((k, face.id, face.bbox));
        }
    }
    let area = |b: &[f32; 4]| f64::from((b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0));
    let mut ids: Vec<u64> = seen.iter().map(|s| s.1).collect();
    ids.sort_unstable();
    ids.dedup();
    let best = ids.into_iter().max_by(|&a, &b| {
        let stats = |id: u64| {
            let mine: Vec<_> = seen.iter().filter(|s| s.1 == id).collect();
            let mean_area = mine.iter().map(|s| area(&s.2)).sum::<f64>() / mine.len() as f64;
            (mine.len(), mean_area)
        };
        let (sa, sb) = (stats(a), stats(b));
        // Most frames, then the larger face, then the older track (smaller id).
        sa.0.cmp(&sb.0).then(sa.1.total_cmp(&sb.1)).then(b.cmp(&a))
    });
    let Some(best) = best else {
        return Ok((vec![None; frames.len()], None));
    };
    let track: Vec<(usize, [f32; 4])> = seen
        .iter()
        .filter(|s| s.1 == best)
        .map(|s| (s.0, s.2))
        .collect();
    let faces = (0..frames.len())
        .map(|k| {
            // Nearest frame with the track; the earlier one on a tie.
            track
                .iter()
                .min_by_key(|(j, _)| (j.abs_diff(k), *j))
                .map(|(_, b)| pixel_box(*b))
        })
        .collect();
    let mut body: Option<[f32; 4]> = None;
    for &(k, bbox) in &track {
        let c = context.context_box(bbox, frames[k].width(), frames[k].height());
        body = Some(match body {
            None => c,
            Some(u) => [
                u[0].min(c[0]),
                u[1].min(c[1]),
                u[2].max(c[2]),
                u[3].max(c[3]),
            ],
        });
    }
    Ok((faces, body.map(pixel_box)))
}

/// A clip ready for the model.
#[derive(Debug)]
pub struct LoadedClip {
    /// The clip's frame directory (root joined).
    pub frame_dir: PathBuf,
    /// All frame files of the clip, sorted.
    pub frame_files: Vec<PathBuf>,
    /// The `T` test-time sampled indices into [`LoadedClip::frame_files`].
    pub sampled_indices: Vec<usize>,
    /// Which frames were decoded, indices into [`LoadedClip::frame_files`], increasing.
    pub frame_indices: Vec<usize>,
    /// The decoded frames, aligned with [`LoadedClip::frame_indices`].
    pub frames: Vec<Frame>,
    /// Face box of each decoded frame (`None`: the whole frame).
    pub face_boxes: Vec<Option<PixelBox>>,
    /// The clip's body box (`None`: the whole frame).
    pub body_box: Option<PixelBox>,
    /// Where the face boxes came from.
    pub face_source: BoxSource,
    /// Where the body box came from.
    pub body_source: BoxSource,
    /// Time spent decoding frames.
    pub decode: Duration,
    /// Time spent detecting and tracking faces (zero without the detector).
    pub detect: Duration,
}

impl LoadedClip {
    /// Borrowed views of the decoded frames, for the classifier.
    pub fn rgb_frames(&self) -> Vec<RgbFrame<'_>> {
        self.frames.iter().map(Frame::rgb).collect()
    }

    /// For each of the `T` sampled positions, the index into [`LoadedClip::frames`]: what
    /// the classifier's own sampling of the decoded frames picks.
    pub fn positions(&self) -> Vec<usize> {
        sample_indices(self.frames.len(), self.sampled_indices.len())
            .expect("a loaded clip has frames")
    }

    /// Sampled positions whose frame has a face box.
    pub fn face_boxes_used(&self) -> usize {
        self.positions()
            .iter()
            .filter(|&&k| self.face_boxes[k].is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_clips_decode_only_the_sampled_frames() {
        for f in 17..400 {
            let sampled = sample_indices(f, 16).unwrap();
            assert_eq!(frames_to_decode(f, &sampled, 16), sampled, "F={f}");
        }
    }

    #[test]
    fn short_clips_decode_every_frame() {
        for f in 1..=16 {
            let sampled = sample_indices(f, 16).unwrap();
            assert_eq!(
                frames_to_decode(f, &sampled, 16),
                (0..f).collect::<Vec<_>>()
            );
        }
    }
}
