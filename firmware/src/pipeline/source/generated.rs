//! A deterministic synthetic classroom: the frame source of the demo and of the tests.
//!
//! `students` sit in a grid of seats; each is drawn as a body, a face ellipse (skin, hair,
//! eyes) and a desk, on a plain wall. Every frame carries the faces' true boxes as
//! annotations, so the whole pipeline can run without a camera or a face detector.
//!
//! The scene is a pure function of the configuration and the frame index
//! ([`GeneratedSource::faces_at`]): the same configuration always yields the same frames.
//! Each student has a role, by seat number `s` (phases are offset per student, cycles are
//! [`CYCLE_FRAMES`] long):
//!
//! - `s % 4 == 0` **steady**: sways slightly in place, always visible.
//! - `s % 4 == 1` **leaver**: away for [`LEAVE_FRAMES`] frames per cycle, then back in the
//!   same seat.
//! - `s % 4 == 2` **blinker**: looks away (no face box) for 2 frames every 60, like a missed
//!   detection.
//! - `s % 4 == 3` **walker**: once per cycle stands up, walks right across the row in front
//!   of the other faces (the boxes cross), leaves the frame on the right, and comes back
//!   from the left to sit down again.
//!
//! A face more than half outside the frame is not visible; a partly visible face's box is
//! clamped to the frame. Bounds: one background image is drawn at start, each frame is one
//! copy of it plus the students; nothing grows with the frame count.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::{FrameSource, SourceError};
use crate::pipeline::frame::Frame;
use crate::pipeline::settings::Issues;

/// Length of each student's behaviour cycle, in frames.
pub const CYCLE_FRAMES: u64 = 240;
/// Frames a leaver stays away per cycle.
pub const LEAVE_FRAMES: u64 = 60;
/// Frames a walker is out of the frame per cycle, between leaving right and entering left.
pub const WALKER_AWAY_FRAMES: u64 = 24;
/// Frames a walker takes to stand up (or sit down), moving vertically at constant speed.
const STAND_FRAMES: u64 = 8;
/// Phase of the cycle at which leavers leave and walkers stand up.
const EVENT_PHASE: u64 = 100;

/// The synthetic classroom: `[source.generated]` of `caerd`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratedConfig {
    /// Frame width in pixels, 64 to 4096.
    pub width: u32,
    /// Frame height in pixels, 64 to 4096.
    pub height: u32,
    /// Students in the room, at most 256.
    pub students: NonZeroUsize,
    /// Frames to deliver; `None` for an endless source (not a configuration key).
    #[serde(skip)]
    pub frames: Option<u64>,
    /// Changes colours and the students' phase offsets.
    pub seed: u64,
    /// When set, frames are delivered no faster than one per interval (real-time demo);
    /// otherwise as fast as they are asked for (not a configuration key).
    #[serde(skip)]
    pub frame_interval: Option<Duration>,
}

impl Default for GeneratedConfig {
    fn default() -> Self {
        GeneratedConfig {
            width: 640,
            height: 480,
            students: NonZeroUsize::new(6).expect("6 is not zero"),
            frames: None,
            seed: 0,
            frame_interval: None,
        }
    }
}

impl GeneratedConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        v.range("width", self.width, 64, 4096);
        v.range("height", self.height, 64, 4096);
        v.at_most("students", self.students.get(), 256);
    }
}

/// One visible face of the synthetic scene, with the student it belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratedFace {
    /// The student (seat number, from 0).
    pub student: usize,
    /// The face box `[left, top, right, bottom]`, clamped to the frame.
    pub bbox: [f32; 4],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Steady,
    Leaver,
    Blinker,
    Walker,
}

#[derive(Debug, Clone)]
struct Student {
    role: Role,
    /// Seated face centre.
    seat: (f32, f32),
    phase_offset: u64,
    skin: Rgb<u8>,
    hair: Rgb<u8>,
    shirt: Rgb<u8>,
}

/// Frames of a synthetic classroom with known face boxes.
#[derive(Debug)]
pub struct GeneratedSource {
    config: GeneratedConfig,
    /// Face ellipse radii (x, y).
    radii: (f32, f32),
    /// Walking speed, pixels per frame.
    speed: f32,
    students: Vec<Student>,
    background: RgbImage,
    next: u64,
    started: Option<Instant>,
}

/// SplitMix64: a tiny deterministic generator for colours and phases.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn shade(base: [u8; 3], r: u64) -> Rgb<u8> {
    let jitter = |c: u8, k: u32| c.saturating_add(((r >> k) & 0x1f) as u8).saturating_sub(16);
    Rgb([jitter(base[0], 0), jitter(base[1], 8), jitter(base[2], 16)])
}

impl GeneratedSource {
    /// A classroom as configured; fails on a frame smaller than 64x64 or a grid whose
    /// faces would be under 8 pixels wide.
    pub fn new(config: GeneratedConfig) -> Result<Self, SourceError> {
        let config_err = |field, reason| SourceError::Config {
            source_kind: "generated",
            field,
            reason,
        };
        if crate::pipeline::settings::check(|v| config.issues(v)).is_err() {
            return Err(config_err(
                "width/height/students",
                "out of range (64 to 4096 pixels, at most 256 students)",
            ));
        }
        let n = config.students.get();
        let (w, h) = (config.width as f32, config.height as f32);
        // Near-square cells: cols/rows close to the frame's aspect ratio.
        let cols = ((n as f32 * w / h).sqrt().ceil() as usize).clamp(1, n);
        let rows = n.div_ceil(cols);
        let (cell_w, cell_h) = (w / cols as f32, h / rows as f32);
        let rx = (cell_w * 0.16).min(cell_h * 0.13);
        if rx < 4.0 {
            return Err(config_err(
                "students",
                "too many for the frame size (faces under 8 px)",
            ));
        }
        let radii = (rx, rx * 1.25);
        let students = (0..n)
            .map(|s| {
                let r = splitmix(config.seed ^ splitmix(s as u64));
                let (col, row) = (s % cols, s / cols);
                let role = match s % 4 {
                    0 => Role::Steady,
                    1 => Role::Leaver,
                    2 => Role::Blinker,
                    _ => Role::Walker,
                };
                Student {
                    role,
                    seat: ((col as f32 + 0.5) * cell_w, (row as f32 + 0.38) * cell_h),
                    phase_offset: r % CYCLE_FRAMES,
                    skin: shade([205, 160, 130], r),
                    hair: shade([60, 40, 30], r >> 24),
                    shirt: shade([60 + (r % 150) as u8, 90, 150], r >> 40),
                }
            })
            .collect();
        let background = Self::draw_background(&config, cell_w, cell_h, rows, cols, radii);
        Ok(GeneratedSource {
            // A cell in 12 frames, but never so slow that the walk outlasts the cycle.
            speed: (cell_w / 12.0).max((w + 2.0 * rx) / 96.0),
            radii,
            students,
            background,
            config,
            next: 0,
            started: None,
        })
    }

    /// The visible faces in frame `index`, ordered by student; the same boxes as that
    /// frame's annotations.
    pub fn faces_at(&self, index: u64) -> Vec<GeneratedFace> {
        (0..self.students.len())
            .filter_map(|s| {
                let (cx, cy) = self.face_centre(s, index)?;
                let bbox = self.visible_box(cx, cy)?;
                Some(GeneratedFace { student: s, bbox })
            })
            .collect()
    }

    /// Face centre of student `s` in frame `t`, or `None` while away (off-screen included).
    fn face_centre(&self, s: usize, t: u64) -> Option<(f32, f32)> {
        let st = &self.students[s];
        let p = (t + st.phase_offset) % CYCLE_FRAMES;
        let tf = t as f32;
        let sway_x = 0.08
            * self.radii.0
            * 2.0
            * (tf * std::f32::consts::TAU / (40.0 + 7.0 * s as f32) + s as f32).sin();
        let sway_y = 0.05
            * self.radii.1
            * 2.0
            * (tf * std::f32::consts::TAU / (55.0 + 5.0 * s as f32) + 2.0 * s as f32).sin();
        let seated = (st.seat.0 + sway_x, st.seat.1 + sway_y);
        match st.role {
            Role::Steady => Some(seated),
            Role::Leaver => {
                (!(EVENT_PHASE..EVENT_PHASE + LEAVE_FRAMES).contains(&p)).then_some(seated)
            }
            Role::Blinker => (p % 60 >= 2).then_some(seated),
            Role::Walker => self.walker_centre(st.seat, seated, p),
        }
    }

    /// The walker's path: stand up, walk right out of the frame, stay away, enter from the
    /// left, walk to the seat, sit down. Every stretch is at constant velocity.
    fn walker_centre(&self, seat: (f32, f32), seated: (f32, f32), p: u64) -> Option<(f32, f32)> {
        // Standing, the face rises by 0.4 face heights: walking, it crosses the seated faces
        // of its row with IoU up to about 0.4.
        let rise = 0.8 * self.radii.1;
        let stand_y = seat.1 - rise;
        let width = self.config.width as f32;
        let out_frames = ((width + self.radii.0 - seat.0) / self.speed).ceil() as u64;
        let in_frames = ((seat.0 + self.radii.0) / self.speed).ceil() as u64;
        let k = |from: u64| (p - from) as f32;
        let t_up = EVENT_PHASE;
        let t_walk = t_up + STAND_FRAMES;
        let t_away = t_walk + out_frames;
        let t_back = t_away + WALKER_AWAY_FRAMES;
        let t_down = t_back + in_frames;
        let t_done = t_down + STAND_FRAMES;
        let centre = if p < t_up || p >= t_done {
            seated
        } else if p < t_walk {
            (seat.0, seat.1 - rise * k(t_up) / STAND_FRAMES as f32)
        } else if p < t_away {
            (seat.0 + self.speed * k(t_walk), stand_y)
        } else if p < t_back {
            return None;
        } else if p < t_down {
            (-self.radii.0 + self.speed * k(t_back), stand_y)
        } else {
            (seat.0, stand_y + rise * k(t_down) / STAND_FRAMES as f32)
        };
        Some(centre)
    }

    /// The clamped box of a face centred at (`cx`, `cy`), if at least half of it is inside.
    fn visible_box(&self, cx: f32, cy: f32) -> Option<[f32; 4]> {
        let (rx, ry) = self.radii;
        let (w, h) = (self.config.width as f32, self.config.height as f32);
        let full = [cx - rx, cy - ry, cx + rx, cy + ry];
        let clamped = [
            full[0].max(0.0),
            full[1].max(0.0),
            full[2].min(w),
            full[3].min(h),
        ];
        let area = |b: [f32; 4]| (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
        (area(clamped) >= 0.5 * area(full)).then_some(clamped)
    }

    fn draw_background(
        config: &GeneratedConfig,
        cell_w: f32,
        cell_h: f32,
        rows: usize,
        cols: usize,
        radii: (f32, f32),
    ) -> RgbImage {
        let mut image = RgbImage::from_fn(config.width, config.height, |_, y| {
            let g = 200 - (40 * y / config.height.max(1)) as u8;
            Rgb([g, g, g.saturating_sub(15)])
        });
        for row in 0..rows {
            for col in 0..cols {
                let cx = (col as f32 + 0.5) * cell_w;
                let top = (row as f32 + 0.38) * cell_h + 3.2 * radii.1;
                fill_rect(
                    &mut image,
                    [
                        cx - 2.4 * radii.0,
                        top,
                        cx + 2.4 * radii.0,
                        top + 0.9 * radii.1,
                    ],
                    Rgb([120, 85, 50]),
                );
            }
        }
        image
    }

    fn draw_frame(&self, index: u64) -> RgbImage {
        let mut image = self.background.clone();
        let (rx, ry) = self.radii;
        // Walkers last, so that they pass in front of the seated students.
        let order = self
            .students
            .iter()
            .enumerate()
            .filter(|(_, s)| s.role != Role::Walker)
            .chain(
                self.students
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.role == Role::Walker),
            );
        for (s, st) in order {
            let Some((cx, cy)) = self.face_centre(s, index) else {
                continue;
            };
            fill_rect(
                &mut image,
                [cx - 1.6 * rx, cy + 0.9 * ry, cx + 1.6 * rx, cy + 3.4 * ry],
                st.shirt,
            );
            fill_ellipse(
                &mut image,
                (cx, cy - 0.25 * ry),
                (1.05 * rx, 0.9 * ry),
                st.hair,
            );
            fill_ellipse(
                &mut image,
                (cx, cy + 0.1 * ry),
                (0.92 * rx, 0.88 * ry),
                st.skin,
            );
            let eye = (0.14 * rx).max(1.0);
            for side in [-0.38, 0.38] {
                fill_ellipse(
                    &mut image,
                    (cx + side * rx, cy),
                    (eye, eye),
                    Rgb([30, 25, 25]),
                );
            }
            fill_rect(
                &mut image,
                [cx - 0.3 * rx, cy + 0.45 * ry, cx + 0.3 * rx, cy + 0.55 * ry],
                Rgb([150, 70, 70]),
            );
        }
        image
    }
}

fn fill_rect(image: &mut RgbImage, b: [f32; 4], colour: Rgb<u8>) {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (x0, y0) = (b[0].clamp(0.0, w) as u32, b[1].clamp(0.0, h) as u32);
    let (x1, y1) = (b[2].clamp(0.0, w) as u32, b[3].clamp(0.0, h) as u32);
    for y in y0..y1 {
        for x in x0..x1 {
            image.put_pixel(x, y, colour);
        }
    }
}

fn fill_ellipse(image: &mut RgbImage, centre: (f32, f32), radii: (f32, f32), colour: Rgb<u8>) {
    let (cx, cy) = centre;
    let (rx, ry) = radii;
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (x0, y0) = (
        (cx - rx).clamp(0.0, w) as u32,
        (cy - ry).clamp(0.0, h) as u32,
    );
    let (x1, y1) = (
        (cx + rx).clamp(0.0, w) as u32,
        (cy + ry).clamp(0.0, h) as u32,
    );
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = ((x as f32 + 0.5 - cx) / rx, (y as f32 + 0.5 - cy) / ry);
            if dx * dx + dy * dy <= 1.0 {
                image.put_pixel(x, y, colour);
            }
        }
    }
}

impl FrameSource for GeneratedSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.config.frames.is_some_and(|n| self.next >= n) {
            return Ok(None);
        }
        if let Some(interval) = self.config.frame_interval {
            let started = *self.started.get_or_insert_with(Instant::now);
            let due =
                started + interval.saturating_mul(u32::try_from(self.next).unwrap_or(u32::MAX));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let index = self.next;
        self.next += 1;
        let annotations = self.faces_at(index).into_iter().map(|f| f.bbox).collect();
        Ok(Some(Frame {
            image: self.draw_frame(index),
            sequence: index,
            captured_at: Instant::now(),
            annotations: Some(annotations),
        }))
    }

    fn describe(&self) -> String {
        format!(
            "generated classroom {}x{}, {} students, seed {}",
            self.config.width, self.config.height, self.config.students, self.config.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(students: usize, frames: u64) -> GeneratedSource {
        GeneratedSource::new(GeneratedConfig {
            students: NonZeroUsize::new(students).expect("non-zero"),
            frames: Some(frames),
            ..GeneratedConfig::default()
        })
        .expect("valid config")
    }

    #[test]
    fn same_config_gives_the_same_frames() {
        let (mut a, mut b) = (source(6, 3), source(6, 3));
        for _ in 0..3 {
            let (fa, fb) = (
                a.next_frame().expect("a").expect("a"),
                b.next_frame().expect("b").expect("b"),
            );
            assert_eq!(fa.image, fb.image);
            assert_eq!(fa.annotations, fb.annotations);
        }
        assert!(a.next_frame().expect("end").is_none());
    }

    #[test]
    fn annotations_cover_drawn_skin_and_faces_sit_apart_when_seated() {
        let mut src = source(6, 1);
        let frame = src.next_frame().expect("frame").expect("frame");
        let boxes = frame.annotations.expect("annotated");
        assert!(!boxes.is_empty());
        for b in &boxes {
            let (cx, cy) = (
                ((b[0] + b[2]) / 2.0) as u32,
                ((b[1] + b[3]) / 2.0 + 2.0) as u32,
            );
            let px = frame.image.get_pixel(cx, cy);
            assert!(
                px[0] > 150 && px[0] > px[2],
                "no skin at the centre of {b:?}: {px:?}"
            );
        }
    }

    #[test]
    fn every_role_happens_within_one_cycle() {
        // 8 students: 4 per row, the walker (3) at the right end of the first row.
        let src = source(8, CYCLE_FRAMES);
        let visible = |s: usize| {
            (0..CYCLE_FRAMES)
                .filter(|&t| src.faces_at(t).iter().any(|f| f.student == s))
                .count() as u64
        };
        assert_eq!(visible(0), CYCLE_FRAMES, "steady student always visible");
        assert_eq!(visible(1), CYCLE_FRAMES - LEAVE_FRAMES, "leaver away once");
        assert_eq!(
            visible(2),
            CYCLE_FRAMES - 2 * CYCLE_FRAMES / 60,
            "blinker misses 2 of 60"
        );
        let walker_away = CYCLE_FRAMES - visible(3);
        assert!(
            walker_away > WALKER_AWAY_FRAMES,
            "walker also leaves the frame: {walker_away}"
        );
        // The walker's box crosses another student's box at some frame.
        let crosses = (0..CYCLE_FRAMES).any(|t| {
            let faces = src.faces_at(t);
            let w = faces.iter().find(|f| f.student == 3);
            w.is_some_and(|w| {
                faces
                    .iter()
                    .any(|f| f.student != 3 && overlap(f.bbox, w.bbox) > 0.0)
            })
        });
        assert!(crosses, "walker never crosses another face");
    }

    fn overlap(a: [f32; 4], b: [f32; 4]) -> f32 {
        (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0)
    }

    #[test]
    fn boxes_stay_inside_the_frame() {
        let src = source(8, 1);
        for t in 0..CYCLE_FRAMES {
            for f in src.faces_at(t) {
                let b = f.bbox;
                assert!(
                    b[0] >= 0.0
                        && b[1] >= 0.0
                        && b[2] <= 640.0
                        && b[3] <= 480.0
                        && b[0] < b[2]
                        && b[1] < b[3],
                    "{b:?}"
                );
            }
        }
    }

    #[test]
    fn tiny_frames_and_crowds_are_rejected() {
        let config = GeneratedConfig {
            width: 32,
            ..GeneratedConfig::default()
        };
        assert!(matches!(
            GeneratedSource::new(config),
            Err(SourceError::Config { .. })
        ));
        let crowd = GeneratedConfig {
            width: 64,
            height: 64,
            students: NonZeroUsize::new(400).expect("non-zero"),
            ..GeneratedConfig::default()
        };
        assert!(matches!(
            GeneratedSource::new(crowd),
            Err(SourceError::Config { .. })
        ));
    }
}
