//! A deterministic synthetic classroom: the frame source of the demo and of the tests.
//!
//! `students` sit in a grid of seats; each is drawn as a body, a face (skin, hair, eyes, mouth)
//! and what they hold, behind a desk, on a wall. Every frame carries the faces' true boxes as
//! annotations, so the whole pipeline can run without a camera or a face detector, and the
//! truth of each face is known: its box and its scripted academic state ([`script`]), drawn
//! with the cues of [`draw`]. Seeds vary skin, hair, clothes, face sizes, the wall and the
//! light; a fixed noise pattern, shifted every frame, covers everything.
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
//! `posters` portraits hang on the wall between the front row's seats: faces drawn like the
//! students' but never moving and never annotated, the face-like distractors a real wall
//! has (a poster, a painting). [`GeneratedSource::poster_boxes`] gives their face boxes.
//!
//! A face more than half outside the frame is not visible; a partly visible face's box is
//! clamped to the frame. Bounds: one background image is drawn at start, each frame is one
//! copy of it plus the students; nothing grows with the frame count.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::{FrameSource, SourceError};

mod draw;
pub mod script;

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
/// Most portraits on the wall.
pub const MAX_POSTERS: usize = 8;
/// A portrait's face size against the room's faces.
const POSTER_SCALE: f32 = 0.85;

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
    /// Changes colours, sizes, light, the students' phase offsets and their states.
    pub seed: u64,
    /// Frames per state segment: every student keeps one scripted state this long (16 to
    /// 10,000,000).
    pub state_frames: u64,
    /// Portraits on the wall between the front row's seats (still, face-like, not
    /// annotated), at most 8 and fewer than the front row's seats.
    pub posters: usize,
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
            state_frames: 600,
            posters: 0,
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
        v.range("state_frames", self.state_frames, 16, 10_000_000);
        v.at_most("posters", self.posters, MAX_POSTERS);
    }
}

/// One visible face of the synthetic scene, with the student it belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratedFace {
    /// The student (seat number, from 0).
    pub student: usize,
    /// The face box `[left, top, right, bottom]`, clamped to the frame.
    pub bbox: [f32; 4],
    /// The student's scripted state, a class index ([`script`]).
    pub state: usize,
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
    /// Face ellipse radii (x, y).
    radii: (f32, f32),
    phase_offset: u64,
    look: draw::Look,
}

/// Frames of a synthetic classroom with known face boxes.
#[derive(Debug)]
pub struct GeneratedSource {
    config: GeneratedConfig,
    /// Face ellipse radii (x, y) before each student's own scale.
    radii: (f32, f32),
    /// Walking speed, pixels per frame.
    speed: f32,
    students: Vec<Student>,
    /// Face boxes of the portraits on the wall.
    posters: Vec<[f32; 4]>,
    background: RgbImage,
    /// Added to every frame (values in -6..=6), as long as a frame.
    noise: Vec<i8>,
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

/// `base` jittered by up to ±16 per channel (from `r`) and scaled by `light`.
fn shade(base: [u8; 3], r: u64, light: f32) -> Rgb<u8> {
    let jitter = |c: u8, k: u32| {
        let c = f32::from(c.saturating_add(((r >> k) & 0x1f) as u8).saturating_sub(16));
        (c * light).clamp(0.0, 255.0) as u8
    };
    Rgb([jitter(base[0], 0), jitter(base[1], 8), jitter(base[2], 16)])
}

/// Skin tones, light to dark.
const SKINS: [[u8; 3]; 4] = [
    [236, 200, 172],
    [205, 160, 130],
    [160, 114, 84],
    [106, 72, 52],
];
/// Hair colours.
const HAIRS: [[u8; 3]; 4] = [[40, 28, 22], [90, 60, 35], [170, 130, 70], [25, 25, 28]];

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
                "width/height/students/posters",
                "out of range (64 to 4096 pixels, at most 256 students, at most 8 posters)",
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
        if config.posters >= cols {
            return Err(config_err(
                "posters",
                "more than the gaps between the front row's seats (one fewer than its seats)",
            ));
        }
        // The room's light: 0.8 to 1.15 times the base colours.
        let light = 0.8 + (splitmix(config.seed ^ 0x11CE) % 36) as f32 / 100.0;
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
                // Faces from 0.9 to 1.1 times the room's size.
                let scale = 0.9 + (splitmix(r) % 21) as f32 / 100.0;
                let u = splitmix(r ^ 0xC010);
                Student {
                    role,
                    seat: ((col as f32 + 0.5) * cell_w, (row as f32 + 0.38) * cell_h),
                    radii: (radii.0 * scale, radii.1 * scale),
                    phase_offset: r % CYCLE_FRAMES,
                    look: draw::Look {
                        skin: shade(SKINS[(u % 4) as usize], r, light),
                        hair: shade(HAIRS[((u >> 8) % 4) as usize], r >> 24, light),
                        shirt: shade([60 + (r % 150) as u8, 90, 150], r >> 40, light),
                        book: shade([40 + (u >> 16) as u8 % 180, 60, 140], u >> 24, light),
                    },
                }
            })
            .collect();
        let mut background =
            Self::draw_background(&config, cell_w, cell_h, rows, cols, radii, light);
        let poster_radii = (radii.0 * POSTER_SCALE, radii.1 * POSTER_SCALE);
        let posters = (0..config.posters)
            .map(|k| {
                // Between seats k and k + 1 of the front row, at their faces' height.
                let centre = ((k + 1) as f32 * cell_w, 0.38 * cell_h);
                let r = splitmix(config.seed ^ 0x9057 ^ splitmix(k as u64));
                let look = draw::Look {
                    skin: shade(SKINS[(r % 4) as usize], r >> 8, light),
                    hair: shade(HAIRS[((r >> 4) % 4) as usize], r >> 24, light),
                    shirt: shade([50, 70 + (r >> 40) as u8 % 120, 90], r >> 48, light),
                    book: shade([0, 0, 0], 0, light),
                };
                draw::portrait(&mut background, &look, centre, poster_radii);
                let (rx, ry) = poster_radii;
                [centre.0 - rx, centre.1 - ry, centre.0 + rx, centre.1 + ry]
            })
            .collect();
        let len = config.width as usize * config.height as usize * 3;
        let mut noise_state = config.seed ^ 0x0015E;
        let noise = (0..len)
            .map(|_| {
                noise_state = splitmix(noise_state);
                (noise_state % 13) as i8 - 6
            })
            .collect();
        Ok(GeneratedSource {
            // A cell in 12 frames, but never so slow that the walk outlasts the cycle.
            speed: (cell_w / 12.0).max((w + 2.0 * rx) / 96.0),
            radii,
            students,
            posters,
            background,
            noise,
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
                let bbox = self.visible_box(cx, cy, self.students[s].radii)?;
                let state = self.state_at(s, index);
                Some(GeneratedFace {
                    student: s,
                    bbox,
                    state,
                })
            })
            .collect()
    }

    /// The face boxes of the portraits on the wall (`posters`): the same in every frame,
    /// never in the annotations.
    pub fn poster_boxes(&self) -> &[[f32; 4]] {
        &self.posters
    }

    /// The scripted state of student `s` in frame `index` (whether visible or not).
    pub fn state_at(&self, s: usize, index: u64) -> usize {
        script::state_of(self.config.seed, s, index / self.config.state_frames)
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
        // A tired head hangs lower.
        let droop = if self.state_at(s, t) == script::FATIGUE {
            0.15 * st.radii.1
        } else {
            0.0
        };
        let seated = (st.seat.0 + sway_x, st.seat.1 + sway_y + droop);
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
    fn visible_box(&self, cx: f32, cy: f32, radii: (f32, f32)) -> Option<[f32; 4]> {
        let (rx, ry) = radii;
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
        light: f32,
    ) -> RgbImage {
        let tint = splitmix(config.seed ^ 0x3A11);
        let wall = [
            170 + (tint % 40) as u8,
            170 + ((tint >> 8) % 40) as u8,
            150 + ((tint >> 16) % 40) as u8,
        ];
        let mut image = RgbImage::from_fn(config.width, config.height, |_, y| {
            let fade = 40 * y / config.height.max(1);
            Rgb(wall.map(|c| (f32::from(c.saturating_sub(fade as u8)) * light) as u8))
        });
        for row in 0..rows {
            for col in 0..cols {
                let cx = (col as f32 + 0.5) * cell_w;
                let top = (row as f32 + 0.38) * cell_h + 3.2 * radii.1;
                draw::fill_rect(
                    &mut image,
                    [
                        cx - 2.4 * radii.0,
                        top,
                        cx + 2.4 * radii.0,
                        top + 0.9 * radii.1,
                    ],
                    shade([120, 85, 50], tint >> 24, light),
                );
            }
        }
        image
    }

    /// The picture of frame `index` (what [`FrameSource::next_frame`] delivers as frame
    /// `index`), in any order.
    pub fn render(&self, index: u64) -> RgbImage {
        self.draw_frame(index)
    }

    /// The source's settings.
    pub fn config(&self) -> &GeneratedConfig {
        &self.config
    }

    fn draw_frame(&self, index: u64) -> RgbImage {
        let mut image = self.background.clone();
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
            if let Some(centre) = self.face_centre(s, index) {
                let state = self.state_at(s, index);
                draw::student(&mut image, &st.look, centre, st.radii, state, index);
            }
        }
        draw::add_noise(&mut image, &self.noise, index);
        image
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
    fn annotations_cover_drawn_skin() {
        let mut src = source(6, 1);
        let faces = src.faces_at(0);
        let frame = src.next_frame().expect("frame").expect("frame");
        assert!(!faces.is_empty());
        for f in &faces {
            let b = f.bbox;
            let (cx, cy) = (
                ((b[0] + b[2]) / 2.0) as u32,
                ((b[1] + b[3]) / 2.0 + 2.0) as u32,
            );
            let px = frame.image.get_pixel(cx, cy);
            let skin = src.students[f.student].look.skin;
            // The noise adds at most 6 to each channel.
            assert!(
                px.0.iter().zip(skin.0).all(|(p, s)| p.abs_diff(s) <= 6),
                "no skin at the centre of {b:?}: {px:?} vs {skin:?}"
            );
        }
    }

    /// Portraits hang between the front row's seats: drawn (the frame differs from the
    /// same room without them at each portrait's centre), never annotated; more portraits
    /// than gaps are refused.
    #[test]
    fn posters_are_drawn_still_and_never_annotated() {
        let config = GeneratedConfig {
            width: 960,
            height: 540,
            posters: 3,
            ..GeneratedConfig::default()
        };
        let mut src = GeneratedSource::new(config.clone()).expect("source");
        let posters = src.poster_boxes().to_vec();
        assert_eq!(posters.len(), 3);
        let blank = GeneratedSource::new(GeneratedConfig {
            posters: 0,
            ..config.clone()
        })
        .expect("source");
        for t in 0..3 {
            let frame = src.next_frame().expect("frame").expect("frame");
            let annotations = frame.annotations.clone().expect("annotations");
            let bare = blank.render(t);
            assert_eq!(
                annotations,
                blank.faces_at(t).iter().map(|f| f.bbox).collect::<Vec<_>>()
            );
            for p in &posters {
                let (cx, cy) = (
                    ((p[0] + p[2]) / 2.0) as u32,
                    ((p[1] + p[3]) / 2.0) as u32 + 2,
                );
                let here = frame.image.get_pixel(cx, cy);
                assert_ne!(here, bare.get_pixel(cx, cy), "no portrait at {p:?}");
            }
        }
        let too_many = GeneratedSource::new(GeneratedConfig {
            posters: 4,
            ..config
        });
        assert!(
            matches!(
                too_many,
                Err(SourceError::Config {
                    field: "posters",
                    ..
                })
            ),
            "{too_many:?}"
        );
    }

    #[test]
    fn states_follow_the_script_and_change_only_between_segments() {
        let src = GeneratedSource::new(GeneratedConfig {
            students: NonZeroUsize::new(30).expect("non-zero"),
            state_frames: 50,
            ..GeneratedConfig::default()
        })
        .expect("valid config");
        for f in src.faces_at(10) {
            assert_eq!(f.state, script::state_of(0, f.student, 0));
            assert_eq!(src.state_at(f.student, 49), f.state);
        }
        let changed = (0..30)
            .filter(|&s| src.state_at(s, 49) != src.state_at(s, 50))
            .count();
        assert!(changed > 10, "a new segment redraws the states: {changed}");
        let states: std::collections::BTreeSet<usize> =
            (0..30).map(|s| src.state_at(s, 0)).collect();
        assert_eq!(states.len(), 5, "30 students show every state: {states:?}");
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
