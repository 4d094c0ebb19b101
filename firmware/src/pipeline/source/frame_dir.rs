//! A clip directory as a frame source (bench path, RAER layout).
//!
//! A clip is a directory whose image files (`.jpg`, `.jpeg`, `.png`, any case) are its
//! frames, in byte order of their file names (RAER names frames with zero-padded numbers).
//! Other files are ignored. Optionally a JSON file gives the known face boxes per frame:
//!
//! ```json
//! {"00001.jpg": [[412.0, 96.5, 470.0, 170.0]], "00002.jpg": []}
//! ```
//!
//! Each key is a frame's file name, each value its face boxes `[left, top, right, bottom]`
//! in pixels. With a box file every frame is annotated: a frame it does not list has no
//! face. A key that is not a frame of the directory is an error (a typo would otherwise
//! silently drop boxes).
//!
//! Bounds: the file list is read once at open; one frame is decoded per call and owned by
//! the caller; nothing is cached.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{FrameSource, SourceError};
use crate::pipeline::frame::Frame;

const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// The largest face box file read.
pub const MAX_ANNOTATIONS_BYTES: u64 = 64 << 20;

/// The frames of one clip directory, in file name order.
#[derive(Debug)]
pub struct FrameDirSource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    /// Face boxes per file, aligned with `files`, when a box file was given.
    annotations: Option<Vec<Vec<[f32; 4]>>>,
    next: usize,
}

impl FrameDirSource {
    /// Lists the image files of `dir`; fails if it cannot be read or holds none.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let dir = dir.into();
        let io_err = |source| SourceError::Io {
            path: dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            let is_image = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                IMAGE_EXTENSIONS
                    .iter()
                    .any(|known| e.eq_ignore_ascii_case(known))
            });
            if is_image && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(SourceError::NoFrames { path: dir });
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        Ok(FrameDirSource {
            dir,
            files,
            annotations: None,
            next: 0,
        })
    }

    /// Reads the face boxes of this clip from the JSON file `path` (format in the module
    /// docs); every frame delivered afterwards carries annotations.
    pub fn with_annotations(mut self, path: &Path) -> Result<Self, SourceError> {
        let data =
            crate::pipeline::files::read_capped(path, MAX_ANNOTATIONS_BYTES).map_err(|source| {
                SourceError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let parsed: BTreeMap<String, Vec<[f32; 4]>> =
            serde_json::from_slice(&data).map_err(|e| SourceError::AnnotationsJson {
                path: path.to_path_buf(),
                line: e.line(),
                column: e.column(),
            })?;
        let mut boxes = vec![Vec::new(); self.files.len()];
        for (name, frame_boxes) in parsed {
            let index = self
                .files
                .iter()
                .position(|f| f.file_name().is_some_and(|n| n == name.as_str()))
                .ok_or_else(|| SourceError::AnnotationsUnknownFrame {
                    path: path.to_path_buf(),
                    dir: self.dir.clone(),
                    name: name.clone(),
                })?;
            if let Some(&bbox) = frame_boxes.iter().find(|b| !is_valid_box(b)) {
                return Err(SourceError::AnnotationsBox {
                    path: path.to_path_buf(),
                    name,
                    bbox,
                });
            }
            boxes[index] = frame_boxes;
        }
        self.annotations = Some(boxes);
        Ok(self)
    }

    /// The frame files, in delivery order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

fn is_valid_box(b: &[f32; 4]) -> bool {
    b.iter().all(|v| v.is_finite()) && b[0] < b[2] && b[1] < b[3]
}

impl FrameSource for FrameDirSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(None);
        };
        let image =
            crate::pipeline::decode::file_to_rgb(path).map_err(|source| SourceError::Image {
                path: path.clone(),
                source,
            })?;
        let annotations = self.annotations.as_ref().map(|a| a[self.next].clone());
        let frame = Frame {
            image,
            sequence: self.next as u64,
            captured_at: Instant::now(),
            annotations,
        };
        self.next += 1;
        Ok(Some(frame))
    }

    fn describe(&self) -> String {
        format!(
            "clip directory {} ({} frames)",
            self.dir.display(),
            self.files.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_frame(dir: &Path, name: &str, shade: u8) {
        image::RgbImage::from_pixel(8, 6, image::Rgb([shade, 0, 0]))
            .save(dir.join(name))
            .expect("write test frame");
    }

    #[test]
    fn delivers_image_files_in_name_order_then_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_frame(dir.path(), "00002.png", 2);
        write_frame(dir.path(), "00001.PNG", 1);
        write_frame(dir.path(), "00003.jpg", 250);
        std::fs::write(dir.path().join("notes.txt"), "not a frame").expect("write");
        let mut source = FrameDirSource::open(dir.path()).expect("open");
        assert_eq!(source.files().len(), 3);
        let mut shades = Vec::new();
        while let Some(frame) = source.next_frame().expect("frame") {
            assert_eq!(frame.sequence, shades.len() as u64);
            assert!(frame.annotations.is_none());
            shades.push(frame.image.get_pixel(0, 0)[0]);
        }
        assert_eq!(shades[..2], [1, 2]);
        assert!(shades[2] > 240, "jpeg shade {}", shades[2]);
        assert!(source.next_frame().expect("after end").is_none());
    }

    #[test]
    fn annotations_are_aligned_by_file_name_and_missing_frames_have_no_face() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_frame(dir.path(), "a.png", 1);
        write_frame(dir.path(), "b.png", 2);
        let boxes = dir.path().join("boxes.json");
        std::fs::write(&boxes, r#"{"b.png": [[1, 1, 4, 5], [2, 0, 3, 1]]}"#).expect("write");
        let mut source = FrameDirSource::open(dir.path())
            .and_then(|s| s.with_annotations(&boxes))
            .expect("open");
        let first = source.next_frame().expect("frame").expect("some");
        assert_eq!(first.annotations, Some(vec![]));
        let second = source.next_frame().expect("frame").expect("some");
        assert_eq!(
            second.annotations,
            Some(vec![[1.0, 1.0, 4.0, 5.0], [2.0, 0.0, 3.0, 1.0]])
        );
    }

    #[test]
    fn bad_annotation_files_are_rejected_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_frame(dir.path(), "a.png", 1);
        let boxes = dir.path().join("boxes.json");
        let open = |json: &str| {
            std::fs::write(&boxes, json).expect("write");
            FrameDirSource::open(dir.path()).and_then(|s| s.with_annotations(&boxes))
        };
        assert!(matches!(
            open(r#"{"typo.png": []}"#),
            Err(SourceError::AnnotationsUnknownFrame { name, .. }) if name == "typo.png"
        ));
        assert!(matches!(
            open(r#"{"a.png": [[5, 0, 1, 3]]}"#),
            Err(SourceError::AnnotationsBox { .. })
        ));
        assert!(matches!(
            open(r#"{"a.png": [[1, 2, 3]]}"#),
            Err(SourceError::AnnotationsJson { .. })
        ));
    }

    #[test]
    fn empty_or_missing_directories_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            FrameDirSource::open(dir.path()),
            Err(SourceError::NoFrames { .. })
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            FrameDirSource::open(&missing),
            Err(SourceError::Io { .. })
        ));
    }

    #[test]
    fn undecodable_frames_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("broken.jpg"), b"not a jpeg").expect("write");
        let mut source = FrameDirSource::open(dir.path()).expect("open");
        let err = source.next_frame().expect_err("broken file");
        assert!(err.to_string().contains("broken.jpg"), "{err}");
        assert!(!err.is_transient());
    }
}
