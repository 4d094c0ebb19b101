//! `synth`: a labelled dataset of the synthetic classroom in the official RAER layout, for the
//! demo model (`scripts/train-demo-model.sh`) and its held-out checks.
//!
//! Each clip follows one seated student of a generated classroom (the firmware's
//! [`GeneratedSource`], the same frames `caerd --demo` sees) for `frames` frames in one
//! scripted state, which is the clip's label. Rooms vary: three layouts (640x360 with 4 to 8
//! students, 960x540 with 8 to 14, 1920x1080 with 24 to 30), a seed per clip (skin, hair,
//! clothes, face size, wall, light, noise, everyone's states) and a random start frame. Labels
//! are balanced: clip `i` of a split has class `i % 5`.
//!
//! Each frame is the part of the room around the student (its context box widened by a
//! quarter, clamped to the room) as a JPEG, so that files stay small while every pixel the
//! firmware would crop is there. Written:
//!
//! - `clips/<split>_<i>/<frame>.jpg`, and `train.txt`, `val.txt`, `test.txt`;
//! - `faces.json`: the official per-frame face boxes (`{dir: {file: box}}`);
//! - `bodies.json`: each clip's context box (the union over its frames of the firmware's
//!   context box of the face), as the daemon would take it;
//! - `bodies-face-only.json`: each clip's face box union instead, for the face-only
//!   variant (context stream without context, as DFER-CLIP);
//! - `synth.json`: the settings, for the record.
//!
//! Synthetic cartoons only: no picture of a person is involved.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufWriter;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use caer::pipeline::crop::{ContextBoxes, ContextConfig};
use caer::pipeline::source::generated::{GeneratedConfig, GeneratedSource};
use image::codecs::jpeg::JpegEncoder;
use serde::Serialize;

use crate::error::Error;

/// Room layouts: width, height, fewest and most students.
const LAYOUTS: [(u32, u32, usize, usize); 3] =
    [(640, 360, 4, 8), (960, 540, 8, 14), (1920, 1080, 24, 30)];
/// JPEG quality of the frames.
const QUALITY: u8 = 92;

/// What to write.
#[derive(Debug, Clone, Serialize)]
pub struct SynthPlan {
    /// The dataset root (created; must not exist or be empty).
    pub out_dir: PathBuf,
    /// Clips per split: train, val, test.
    pub clips: [usize; 3],
    /// Frames per clip (at least 16).
    pub frames: usize,
    /// Seed of the whole dataset; each clip derives its own.
    pub seed: u64,
    /// Only the smallest layout (quick datasets for tests).
    pub small_only: bool,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct SynthReport {
    /// The dataset root.
    pub out_dir: String,
    /// Clips per split.
    pub clips: BTreeMap<&'static str, usize>,
    /// Clips per class over all splits.
    pub per_class: [usize; 5],
    /// JPEG files written.
    pub frames_written: usize,
}

/// SplitMix64, as the generated source uses it.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn union(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
    [
        a[0].min(b[0]),
        a[1].min(b[1]),
        a[2].max(b[2]),
        a[3].max(b[3]),
    ]
}

fn io_error(path: &Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    }
}

/// One clip: a room, a seated student in `class`, and the frames to render.
struct ClipScene {
    source: GeneratedSource,
    student: usize,
    first: u64,
}

/// A room of clip `i` of split `split` whose steadily seated student (a seat `s % 4 == 0`,
/// always visible) is in `class` at the clip's frames.
fn scene(plan: &SynthPlan, split: usize, i: usize, class: usize) -> ClipScene {
    let layouts = if plan.small_only {
        &LAYOUTS[..1]
    } else {
        &LAYOUTS[..]
    };
    for attempt in 0u64.. {
        let r = mix(plan.seed ^ mix((split as u64) << 32 | i as u64) ^ mix(attempt));
        let (width, height, fewest, most) = layouts[(r % layouts.len() as u64) as usize];
        let students = fewest + (mix(r) % (most - fewest + 1) as u64) as usize;
        let config = GeneratedConfig {
            width,
            height,
            students: NonZeroUsize::new(students).expect("at least 4"),
            seed: mix(r ^ 0xC1A5),
            // One state for the whole clip.
            state_frames: 10_000_000,
            ..GeneratedConfig::default()
        };
        let source = GeneratedSource::new(config).expect("the layouts are valid rooms");
        let first = mix(r ^ 0xF1) % 5_000;
        let seats: Vec<usize> = (0..students).step_by(4).collect();
        let student = seats[(mix(r ^ 0x5EA7) % seats.len() as u64) as usize];
        if source.state_at(student, first) == class {
            return ClipScene {
                source,
                student,
                first,
            };
        }
    }
    unreachable!("an endless search ends once a seat draws the class")
}

/// Writes the dataset (see the module docs).
pub fn run(plan: &SynthPlan) -> Result<SynthReport, Error> {
    if plan.frames < 16 {
        return Err(Error::Option {
            option: "--frames",
            value: plan.frames.to_string(),
            reason: "a clip needs at least 16 frames",
        });
    }
    if plan.out_dir.exists() {
        let count = fs::read_dir(&plan.out_dir)
            .map_err(|e| io_error(&plan.out_dir, e))?
            .count();
        if count > 0 {
            return Err(Error::Option {
                option: "--out",
                value: format!("{} ({count} entries)", plan.out_dir.display()),
                reason: "must be a new or empty directory",
            });
        }
    }
    let contexts = ContextBoxes::new(ContextConfig::default()).expect("default context settings");
    let mut faces: BTreeMap<String, BTreeMap<String, [f32; 4]>> = BTreeMap::new();
    let mut bodies: BTreeMap<String, [f32; 4]> = BTreeMap::new();
    let mut face_only: BTreeMap<String, [f32; 4]> = BTreeMap::new();
    let mut report = SynthReport {
        out_dir: plan.out_dir.display().to_string(),
        clips: BTreeMap::new(),
        per_class: [0; 5],
        frames_written: 0,
    };
    for (split, name) in ["train", "val", "test"].into_iter().enumerate() {
        let mut lines = String::new();
        for i in 0..plan.clips[split] {
            let class = i % 5;
            let clip = scene(plan, split, i, class);
            let dir = format!("clips/{name}_{i:05}");
            let written = write_clip(plan, &clip, &dir, &contexts)?;
            report.frames_written += plan.frames;
            report.per_class[class] += 1;
            faces.insert(dir.clone(), written.faces);
            bodies.insert(dir.clone(), written.body);
            face_only.insert(dir.clone(), written.face_union);
            lines.push_str(&format!("{dir} {} {}\n", plan.frames, class + 1));
        }
        report.clips.insert(name, plan.clips[split]);
        let list = plan.out_dir.join(format!("{name}.txt"));
        fs::write(&list, lines).map_err(|e| io_error(&list, e))?;
    }
    write_json(&plan.out_dir.join("faces.json"), &faces)?;
    write_json(&plan.out_dir.join("bodies.json"), &bodies)?;
    write_json(&plan.out_dir.join("bodies-face-only.json"), &face_only)?;
    write_json(&plan.out_dir.join("synth.json"), plan)?;
    Ok(report)
}

/// The boxes of one written clip, in the clip's own (cropped) coordinates.
struct WrittenClip {
    faces: BTreeMap<String, [f32; 4]>,
    body: [f32; 4],
    face_union: [f32; 4],
}

fn write_clip(
    plan: &SynthPlan,
    clip: &ClipScene,
    dir: &str,
    contexts: &ContextBoxes,
) -> Result<WrittenClip, Error> {
    let config = clip.source.config();
    let (w, h) = (config.width, config.height);
    let indices: Vec<u64> = (0..plan.frames as u64).map(|k| clip.first + k).collect();
    let face_of = |t: u64| {
        clip.source
            .faces_at(t)
            .into_iter()
            .find(|f| f.student == clip.student)
            .map(|f| f.bbox)
            .expect("a seat s % 4 == 0 is always visible")
    };
    let boxes: Vec<[f32; 4]> = indices.iter().map(|&t| face_of(t)).collect();
    let face_union = boxes.iter().copied().reduce(union).expect("frames");
    let body = boxes
        .iter()
        .map(|&b| contexts.context_box(b, w, h))
        .reduce(union)
        .expect("frames");
    // The window written: the context box widened by a quarter on each side, in whole pixels.
    let (bw, bh) = (body[2] - body[0], body[3] - body[1]);
    let window = [
        (body[0] - bw / 4.0).max(0.0).floor() as u32,
        (body[1] - bh / 4.0).max(0.0).floor() as u32,
        (body[2] + bw / 4.0).min(w as f32).ceil() as u32,
        (body[3] + bh / 4.0).min(h as f32).ceil() as u32,
    ];
    let shift = |b: [f32; 4]| {
        let (x, y) = (window[0] as f32, window[1] as f32);
        [b[0] - x, b[1] - y, b[2] - x, b[3] - y]
    };
    let folder = plan.out_dir.join(dir);
    fs::create_dir_all(&folder).map_err(|e| io_error(&folder, e))?;
    let mut faces = BTreeMap::new();
    for (k, (&t, &b)) in indices.iter().zip(&boxes).enumerate() {
        let image = clip.source.render(t);
        let part = image::imageops::crop_imm(
            &image,
            window[0],
            window[1],
            window[2] - window[0],
            window[3] - window[1],
        )
        .to_image();
        let file = format!("{:05}.jpg", k + 1);
        let path = folder.join(&file);
        let out = fs::File::create(&path).map_err(|e| io_error(&path, e))?;
        JpegEncoder::new_with_quality(BufWriter::new(out), QUALITY)
            .encode_image(&part)
            .map_err(|e| io_error(&path, e))?;
        faces.insert(file, shift(b));
    }
    Ok(WrittenClip {
        faces,
        body: shift(body),
        face_union: shift(face_union),
    })
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).expect("plain data serialises");
    fs::write(path, text + "\n").map_err(|e| io_error(path, e))
}
