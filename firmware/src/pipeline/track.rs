//! SORT-style multi-face tracker: gives each face an anonymous id that stays while the
//! face stays.
//!
//! Per frame ([`Tracker::update`]):
//!
//! 1. **Predict** every track's box with a constant-velocity model.
//! 2. **Associate** predictions and detections greedily by IoU, highest pair first, pairs
//!    under `iou_threshold` never matched. Greedy rather than Hungarian: with a few dozen
//!    faces that move little between frames the two differ only on near-ties, and greedy
//!    needs no solver.
//! 3. **Update** matched tracks; unmatched tentative tracks die at once; unmatched
//!    confirmed tracks coast on their prediction and die after more than `max_misses`
//!    consecutive misses (reported in [`TrackUpdate::ended`], so that per-track state
//!    elsewhere can be freed).
//! 4. **Birth**: each unmatched detection starts a tentative track, confirmed after
//!    `min_hits` consecutive hits (filters one-frame false positives); only then does it get
//!    an id and appear in [`TrackUpdate::faces`].
//!
//! Motion model: the box is the detector's box as is (the crops are cut from it); the
//! velocity, per frame and per box coordinate, is an exponential average (weight
//! `velocity_smoothing` for the newest displacement) of the displacements between matched
//! boxes. It only serves association, over gaps of a few frames, where a Kalman filter's
//! covariances would bring little for faces tens of pixels wide moving a few pixels per
//! frame. The caller calls `update` once per frame it detects on, evenly spaced in time.
//!
//! Bounds and invariants: at most `max_tracks` tracks (tentative included); a detection
//! arriving when all are taken starts no track and is counted in
//! [`Tracker::refused_total`]. Ids come from a `u64` counter, start at 1 and are never
//! reused by one tracker. No pixels are kept, only boxes.

use std::num::{NonZeroU32, NonZeroUsize};

use serde::{Deserialize, Serialize};

use crate::pipeline::detect::Detection;
use crate::pipeline::settings::{check, Issues, SettingsError};

/// Intersection over union of two `[left, top, right, bottom]` boxes; 0 when either is
/// empty.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |b: &[f32; 4]| (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
    let inter = [
        a[0].max(b[0]),
        a[1].max(b[1]),
        a[2].min(b[2]),
        a[3].min(b[3]),
    ];
    let i = area(&inter);
    let union = area(a) + area(b) - i;
    if union > 0.0 {
        i / union
    } else {
        0.0
    }
}

/// Tracker settings: the `[track]` section of `caerd`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Smallest overlap (IoU) between a track's predicted box and a detection to match them,
    /// in (0, 1].
    pub iou_threshold: f32,
    /// Consecutive detections before a face becomes a track (filters one-frame false faces).
    pub min_hits: NonZeroU32,
    /// Consecutive missed frames a track survives (a face turned away, a missed detection),
    /// at most 1000; one more ends it.
    pub max_misses: u32,
    /// Most faces followed at once, tentative included, at most 1024; also bounds the
    /// classifier's per-student windows.
    pub max_tracks: NonZeroUsize,
    /// Weight of the newest displacement in the velocity average, in (0, 1]: higher follows
    /// a moving face sooner, lower rides out a jittery detector.
    pub velocity_smoothing: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            iou_threshold: 0.3,
            min_hits: NonZeroU32::new(3).expect("3 is not zero"),
            max_misses: 5,
            max_tracks: NonZeroUsize::new(32).expect("32 is not zero"),
            velocity_smoothing: 0.5,
        }
    }
}

/// Most tracks a tracker may keep.
pub const MAX_TRACKS: usize = 1024;

impl TrackerConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        v.positive_up_to("iou_threshold", f64::from(self.iou_threshold), 1.0);
        v.at_most("max_misses", self.max_misses, 1000);
        v.at_most("max_tracks", self.max_tracks.get(), MAX_TRACKS);
        v.positive_up_to(
            "velocity_smoothing",
            f64::from(self.velocity_smoothing),
            1.0,
        );
    }
}

/// A confirmed face seen in the current frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackedFace {
    /// The track's anonymous id.
    pub id: u64,
    /// The face box of this frame (the matched detection's box).
    pub bbox: [f32; 4],
    /// The matched detection's score.
    pub score: f32,
    /// Index of the matched detection in the slice given to [`Tracker::update`].
    pub detection: usize,
}

/// The result of one [`Tracker::update`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackUpdate {
    /// Confirmed tracks matched in this frame, by ascending id.
    pub faces: Vec<TrackedFace>,
    /// Ids of confirmed tracks that ended in this frame (missed too long).
    pub ended: Vec<u64>,
}

#[derive(Debug, Clone)]
struct Track {
    /// Set on confirmation.
    id: Option<u64>,
    /// Last matched box.
    bbox: [f32; 4],
    /// Displacement per frame.
    velocity: [f32; 4],
    hits: u32,
    misses: u32,
}

impl Track {
    fn predicted(&self) -> [f32; 4] {
        let steps = (self.misses + 1) as f32;
        std::array::from_fn(|i| self.bbox[i] + self.velocity[i] * steps)
    }
}

/// Multi-face tracker; see the module docs.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    last_id: u64,
    refused_total: u64,
}

impl Tracker {
    /// An empty tracker; fails on settings out of range ([`TrackerConfig::issues`]).
    pub fn new(config: TrackerConfig) -> Result<Self, SettingsError> {
        check(|v| config.issues(v))?;
        let tracks = Vec::with_capacity(config.max_tracks.get());
        Ok(Tracker {
            config,
            tracks,
            last_id: 0,
            refused_total: 0,
        })
    }

    /// Forgets every track (after a pause); ids keep counting, so none is ever reused.
    pub fn reset(&mut self) {
        self.tracks.clear();
    }

    /// Tracks one frame's detections; see the module docs.
    pub fn update(&mut self, detections: &[Detection]) -> TrackUpdate {
        let predictions: Vec<[f32; 4]> = self.tracks.iter().map(Track::predicted).collect();
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (t, p) in predictions.iter().enumerate() {
            for (d, det) in detections.iter().enumerate() {
                let v = iou(p, &det.bbox);
                if v >= self.config.iou_threshold {
                    pairs.push((v, t, d));
                }
            }
        }
        // Highest IoU first; ties by track then detection, for determinism.
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut track_match: Vec<Option<usize>> = vec![None; self.tracks.len()];
        let mut det_taken = vec![false; detections.len()];
        for (_, t, d) in pairs {
            if track_match[t].is_none() && !det_taken[d] {
                track_match[t] = Some(d);
                det_taken[d] = true;
            }
        }

        let mut update = TrackUpdate::default();
        let beta = self.config.velocity_smoothing;
        let mut kept = Vec::with_capacity(self.tracks.len());
        for (mut track, matched) in std::mem::take(&mut self.tracks)
            .into_iter()
            .zip(track_match)
        {
            match matched {
                Some(d) => {
                    let det = detections[d];
                    let steps = (track.misses + 1) as f32;
                    for i in 0..4 {
                        let observed = (det.bbox[i] - track.bbox[i]) / steps;
                        // The first displacement seen sets the velocity; later ones are averaged.
                        track.velocity[i] = if track.hits == 1 {
                            observed
                        } else {
                            (1.0 - beta) * track.velocity[i] + beta * observed
                        };
                    }
                    track.bbox = det.bbox;
                    track.hits = track.hits.saturating_add(1);
                    track.misses = 0;
                    self.confirm_and_report(&mut track, &det, d, &mut update.faces);
                    kept.push(track);
                }
                None => {
                    track.misses += 1;
                    match track.id {
                        None => {}
                        Some(id) if track.misses > self.config.max_misses => update.ended.push(id),
                        Some(_) => kept.push(track),
                    }
                }
            }
        }
        self.tracks = kept;

        for (d, det) in detections
            .iter()
            .enumerate()
            .filter(|(d, _)| !det_taken[*d])
        {
            if self.tracks.len() >= self.config.max_tracks.get() {
                self.refused_total += 1;
                continue;
            }
            let mut track = Track {
                id: None,
                bbox: det.bbox,
                velocity: [0.0; 4],
                hits: 1,
                misses: 0,
            };
            self.confirm_and_report(&mut track, det, d, &mut update.faces);
            self.tracks.push(track);
        }
        update.faces.sort_by_key(|f| f.id);
        update
    }

    /// Gives `track` its id once seen `min_hits` times, then reports it, if it has one, as
    /// seen in this frame at detection `d`.
    fn confirm_and_report(
        &mut self,
        track: &mut Track,
        det: &Detection,
        d: usize,
        faces: &mut Vec<TrackedFace>,
    ) {
        if track.id.is_none() && track.hits >= self.config.min_hits.get() {
            self.last_id += 1;
            track.id = Some(self.last_id);
        }
        if let Some(id) = track.id {
            faces.push(TrackedFace {
                id,
                bbox: det.bbox,
                score: det.score,
                detection: d,
            });
        }
    }

    /// Tracks held now, tentative included (at most `max_tracks`).
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// Whether no track is held.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Detections that started no track because `max_tracks` tracks were held.
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::pipeline::source::generated::{GeneratedConfig, GeneratedSource, CYCLE_FRAMES};

    fn det(l: f32, t: f32, r: f32, b: f32) -> Detection {
        Detection {
            bbox: [l, t, r, b],
            score: 1.0,
        }
    }

    fn config(min_hits: u32, max_misses: u32, max_tracks: usize) -> TrackerConfig {
        TrackerConfig {
            min_hits: NonZeroU32::new(min_hits).expect("non-zero"),
            max_misses,
            max_tracks: NonZeroUsize::new(max_tracks).expect("non-zero"),
            ..TrackerConfig::default()
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn a_track_is_born_after_min_hits_and_dies_after_max_misses() {
        let mut tracker = Tracker::new(config(3, 2, 8)).expect("tracker");
        let face = [det(10.0, 10.0, 50.0, 50.0)];
        assert!(tracker.update(&face).faces.is_empty());
        assert!(tracker.update(&face).faces.is_empty());
        let third = tracker.update(&face);
        assert_eq!(third.faces.len(), 1);
        let id = third.faces[0].id;
        assert_eq!((id, third.faces[0].detection), (1, 0));
        assert_eq!(tracker.update(&[]), TrackUpdate::default());
        assert_eq!(tracker.update(&[]), TrackUpdate::default());
        assert_eq!(tracker.update(&face).faces[0].id, id, "two misses survived");
        for _ in 0..2 {
            assert!(tracker.update(&[]).ended.is_empty());
        }
        assert_eq!(tracker.update(&[]).ended, vec![id], "third miss ends it");
        assert!(tracker.is_empty());
    }

    #[test]
    fn a_tentative_track_dies_on_its_first_miss_and_ids_are_not_reused() {
        let mut tracker = Tracker::new(config(2, 1, 8)).expect("tracker");
        let face = [det(0.0, 0.0, 10.0, 10.0)];
        tracker.update(&face);
        tracker.update(&[]);
        assert!(tracker.is_empty(), "tentative track kept after a miss");
        tracker.update(&face);
        let first = tracker.update(&face).faces[0].id;
        for _ in 0..2 {
            tracker.update(&[]);
        }
        tracker.update(&face);
        let second = tracker.update(&face).faces[0].id;
        assert!(
            second > first,
            "id {second} reused or not increasing after {first}"
        );
    }

    #[test]
    fn constant_velocity_keeps_a_fast_face_through_a_missed_frame() {
        let mut tracker = Tracker::new(config(1, 3, 8)).expect("tracker");
        // 30 px wide, moving 10 px per frame (IoU 0.5 between frames): after a missed
        // frame the face is 20 px away from its last box (IoU 0.2, under the threshold), so
        // only the prediction can match it.
        let at = |k: usize| det(10.0 * k as f32, 0.0, 10.0 * k as f32 + 30.0, 30.0);
        let id = tracker.update(&[at(0)]).faces[0].id;
        assert_eq!(tracker.update(&[at(1)]).faces[0].id, id);
        assert_eq!(tracker.update(&[at(2)]).faces[0].id, id);
        assert!(tracker.update(&[]).faces.is_empty());
        let after_gap = tracker.update(&[at(4)]);
        assert_eq!(after_gap.faces.len(), 1);
        assert_eq!(after_gap.faces[0].id, id);
    }

    #[test]
    fn new_tracks_are_refused_and_counted_when_full() {
        let mut tracker = Tracker::new(config(1, 0, 2)).expect("tracker");
        let faces: Vec<Detection> = (0..5)
            .map(|i| det(100.0 * i as f32, 0.0, 100.0 * i as f32 + 50.0, 50.0))
            .collect();
        let update = tracker.update(&faces);
        assert_eq!(update.faces.len(), 2);
        assert_eq!((tracker.len(), tracker.refused_total()), (2, 3));
        tracker.update(&[]);
        assert!(tracker.is_empty());
        assert_eq!(
            tracker.update(&faces[3..]).faces.len(),
            2,
            "room again once tracks end"
        );
    }

    #[test]
    fn bad_settings_are_rejected() {
        let bad = TrackerConfig {
            iou_threshold: 0.0,
            ..TrackerConfig::default()
        };
        assert_eq!(
            Tracker::new(bad).err().map(|e| e.0[0].key.clone()),
            Some("iou_threshold".to_owned())
        );
        let bad = TrackerConfig {
            velocity_smoothing: f32::NAN,
            ..TrackerConfig::default()
        };
        assert!(Tracker::new(bad).is_err());
    }

    #[test]
    fn velocity_smoothing_is_read_from_the_track_section_and_checked() {
        let config: TrackerConfig = toml::from_str("velocity_smoothing = 0.25").unwrap();
        assert_eq!(config.velocity_smoothing, 0.25);
        let config: TrackerConfig = toml::from_str("velocity_smoothing = 1.5").unwrap();
        assert_eq!(
            Tracker::new(config).err().map(|e| e.0[0].key.clone()),
            Some("velocity_smoothing".to_owned())
        );
    }

    /// Generated classroom, two cycles: steady students, leavers (away 60 frames), blinkers
    /// (2-frame gaps), walkers that cross the seated faces of their row, leave the frame
    /// and come back. Every id must belong to one student; a student keeps its id while
    /// visible and across short gaps, and gets a new, never-seen id after a long absence.
    #[test]
    fn ids_are_stable_on_a_generated_classroom() {
        let students = 8;
        let frames = 2 * CYCLE_FRAMES;
        let source = GeneratedSource::new(GeneratedConfig {
            students: NonZeroUsize::new(students).expect("non-zero"),
            frames: Some(frames),
            ..GeneratedConfig::default()
        })
        .expect("source");
        let cfg = config(3, 5, 64);
        let max_misses = cfg.max_misses as u64;
        let mut tracker = Tracker::new(cfg).expect("tracker");

        let mut owner: HashMap<u64, usize> = HashMap::new();
        // Per student: (id, last frame seen) of the current visit.
        let mut current: Vec<Option<(u64, u64)>> = vec![None; students];
        let mut last_visible: Vec<Option<u64>> = vec![None; students];
        let mut visit_start: Vec<u64> = vec![0; students];
        let mut new_ids_after_absence = 0;
        let mut ended: HashSet<u64> = HashSet::new();
        let mut crossings = 0;
        for t in 0..frames {
            let faces = source.faces_at(t);
            let detections: Vec<Detection> = faces
                .iter()
                .map(|f| Detection {
                    bbox: f.bbox,
                    score: 1.0,
                })
                .collect();
            crossings += faces
                .iter()
                .enumerate()
                .flat_map(|(i, a)| faces[i + 1..].iter().map(move |b| iou(&a.bbox, &b.bbox)))
                .filter(|v| *v > 0.1)
                .count();
            let update = tracker.update(&detections);
            ended.extend(update.ended.iter().copied());
            for face in &update.faces {
                assert!(
                    !ended.contains(&face.id),
                    "frame {t}: ended id {} came back",
                    face.id
                );
                let student = faces[face.detection].student;
                let first_owner = *owner.entry(face.id).or_insert(student);
                assert_eq!(
                    first_owner, student,
                    "frame {t}: id {} moved from student {first_owner} to {student}",
                    face.id
                );
                match current[student] {
                    Some((id, _)) if id == face.id => {}
                    Some((id, seen)) => {
                        let gap = t - seen - 1;
                        assert!(gap > max_misses, "frame {t}: student {student} changed id {id} -> {} after a gap of {gap}", face.id);
                        new_ids_after_absence += 1;
                    }
                    None => {}
                }
                current[student] = Some((face.id, t));
            }
            // Every visible student is tracked, except in the first min_hits - 1 frames of
            // a visit (a visit ends with an absence longer than max_misses).
            for f in &faces {
                let s = f.student;
                if last_visible[s].is_none_or(|seen| t - seen - 1 > max_misses) {
                    visit_start[s] = t;
                }
                last_visible[s] = Some(t);
                let tracked = update.faces.iter().any(|u| faces[u.detection].student == s);
                assert!(
                    tracked || t - visit_start[s] < 2,
                    "frame {t}: student {s} untracked, visible since {}",
                    visit_start[s]
                );
            }
        }
        assert!(crossings > 0, "the scene has no crossing faces");
        // 2 leavers and 2 walkers, each away once per cycle (the first absence may start
        // before frame 0 for some phases, so at least one return each).
        assert!(
            new_ids_after_absence >= 4,
            "only {new_ids_after_absence} returns seen"
        );
        assert_eq!(tracker.refused_total(), 0);
    }
}
