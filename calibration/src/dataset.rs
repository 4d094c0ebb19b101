//! Labelled clips in the RAER layout (`docs/dataset.md`): the list file, frame directories
//! and the optional face and body box files.
//!
//! - List file: one clip a line, `<frame_dir> <num_frames> <label 1..5>`, white-space
//!   separated; blank lines and lines starting with `#` are skipped. `frame_dir` is relative
//!   to the dataset root (`--root`, by default the list file's folder).
//! - Frames: the `.png`, `.jpg` and `.jpeg` files (any case) of `frame_dir`, sorted by file
//!   name; their count must equal `num_frames`.
//! - Face boxes: one JSON object mapping `"<frame_dir>/<file>"` to `[left, top, right,
//!   bottom]` or `null`; body boxes: one JSON object mapping `"<frame_dir>"` to a box. A
//!   missing entry or `null` means the whole frame, as in the reference.
//!
//! Error policy: a malformed line, a missing directory, a count mismatch or a malformed box
//! entry concerns one clip ([`ClipError`], the clip is skipped); a list or box file that
//! cannot be read or parsed at all is fatal ([`DatasetError`]): running on without the boxes
//! would silently measure another thing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ClipError, ClipIssue, DatasetError};

/// Frame file extensions, compared without regard to case.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// One parsed clip line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// 1-based line number in the list file.
    pub line: usize,
    /// The frame directory as written, relative to the root.
    pub frame_dir: String,
    /// `num_frames` as written.
    pub num_frames: usize,
    /// The class index, 0..5 (the file's label minus one).
    pub label: usize,
}

/// A list file: its clips, and the lines that could not be parsed.
#[derive(Debug)]
pub struct ClipList {
    /// The list file.
    pub path: PathBuf,
    /// The dataset root the frame directories are relative to.
    pub root: PathBuf,
    /// The parsed clip lines, in file order.
    pub entries: Vec<ListEntry>,
    /// Lines that name a clip but could not be parsed.
    pub issues: Vec<ClipIssue>,
}

impl ClipList {
    /// Reads `path`; `root` defaults to the list file's folder. Fails only if the file cannot
    /// be read or names no clip; malformed lines become [`ClipList::issues`].
    pub fn read(path: &Path, root: Option<&Path>) -> Result<ClipList, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(|source| DatasetError::ListIo {
            path: path.to_owned(),
            source,
        })?;
        let root = match root {
            Some(root) => root.to_owned(),
            None => path.parent().map(Path::to_owned).unwrap_or_default(),
        };
        let mut list = ClipList {
            path: path.to_owned(),
            root,
            entries: Vec::new(),
            issues: Vec::new(),
        };
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match parse_line(i + 1, trimmed) {
                Ok(entry) => list.entries.push(entry),
                Err((frame_dir, error)) => list.issues.push(ClipIssue {
                    list: path.to_owned(),
                    line: i + 1,
                    frame_dir,
                    error,
                }),
            }
        }
        if list.entries.is_empty() && list.issues.is_empty() {
            return Err(DatasetError::EmptyList {
                path: path.to_owned(),
            });
        }
        Ok(list)
    }

    /// An issue about `entry` of this list.
    pub fn issue(&self, entry: &ListEntry, error: ClipError) -> ClipIssue {
        ClipIssue {
            list: self.path.clone(),
            line: entry.line,
            frame_dir: Some(entry.frame_dir.clone()),
            error,
        }
    }

    /// The directory of `entry`'s frames.
    pub fn frame_dir(&self, entry: &ListEntry) -> PathBuf {
        self.root.join(&entry.frame_dir)
    }
}

fn parse_line(line: usize, text: &str) -> Result<ListEntry, (Option<String>, ClipError)> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [frame_dir, count, label] = fields[..] else {
        return Err((
            None,
            ClipError::LineFields {
                text: text.to_owned(),
            },
        ));
    };
    let dir = || Some(frame_dir.to_owned());
    let num_frames = count
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0 && count.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            (
                dir(),
                ClipError::NumFrames {
                    value: count.to_owned(),
                },
            )
        })?;
    let label = label
        .parse::<usize>()
        .ok()
        .filter(|l| (1..=5).contains(l) && label.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            (
                dir(),
                ClipError::Label {
                    value: label.to_owned(),
                },
            )
        })?;
    Ok(ListEntry {
        line,
        frame_dir: frame_dir.to_owned(),
        num_frames,
        label: label - 1,
    })
}

/// The frame files of `dir`, sorted by file name, checked against the listed count.
pub fn frame_files(dir: &Path, listed: usize) -> Result<Vec<PathBuf>, ClipError> {
    if !dir.is_dir() {
        return Err(ClipError::MissingDir {
            path: dir.to_owned(),
        });
    }
    let read_err = |source| ClipError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let is_image = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            IMAGE_EXTENSIONS
                .iter()
                .any(|known| e.eq_ignore_ascii_case(known))
        });
        if is_image {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.len() != listed {
        return Err(ClipError::FrameCount {
            path: dir.to_owned(),
            listed,
            found: files.len(),
        });
    }
    Ok(files)
}

/// A face or body box file: a JSON object from keys to boxes. Entries are checked when a
/// clip asks for them, so a malformed entry skips only the clips that use it.
#[derive(Debug, Clone)]
pub struct BoxFile {
    path: PathBuf,
    entries: HashMap<String, Value>,
}

impl BoxFile {
    /// Reads and parses `path`; fails if it is not a JSON object.
    pub fn read(path: &Path) -> Result<BoxFile, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(|source| DatasetError::BoxIo {
            path: path.to_owned(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| DatasetError::BoxJson {
            path: path.to_owned(),
            source,
        })?;
        let found = match value {
            Value::Object(map) => {
                return Ok(BoxFile {
                    path: path.to_owned(),
                    entries: map.into_iter().collect(),
                });
            }
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
        };
        Err(DatasetError::BoxNotObject {
            path: path.to_owned(),
            found,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries in the file.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The box of `key`: `None` if the key is missing or `null`; an error naming the file
    /// and the key if the entry is not four finite numbers.
    pub fn get(&self, key: &str) -> Result<Option<[f32; 4]>, ClipError> {
        let Some(value) = self.entries.get(key) else {
            return Ok(None);
        };
        let bad = || ClipError::BadBox {
            path: self.path.clone(),
            key: key.to_owned(),
            found: truncate(&value.to_string(), 80),
        };
        match value {
            Value::Null => Ok(None),
            Value::Array(items) if items.len() == 4 => {
                let mut bbox = [0f32; 4];
                for (out, item) in bbox.iter_mut().zip(items) {
                    let v = item.as_f64().ok_or_else(bad)? as f32;
                    if !v.is_finite() {
                        return Err(bad());
                    }
                    *out = v;
                }
                Ok(Some(bbox))
            }
            _ => Err(bad()),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// The face box key of a frame: `"<frame_dir>/<file name>"`, as the reference builds it.
pub fn face_key(frame_dir: &str, frame: &Path) -> String {
    let name = frame
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    format!("{frame_dir}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn list_lines_parse_and_bad_lines_name_their_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "list.txt",
            "# comment\n\nclips/a 16 1\n  clips/b\t20 5  \nclips/c 16\nclips/d x 2\nclips/e 3 6\nclips/f 0 1\n",
        );
        let list = ClipList::read(&path, None).expect("read");
        assert_eq!(list.root, dir.path());
        assert_eq!(
            list.entries,
            [
                ListEntry {
                    line: 3,
                    frame_dir: "clips/a".into(),
                    num_frames: 16,
                    label: 0
                },
                ListEntry {
                    line: 4,
                    frame_dir: "clips/b".into(),
                    num_frames: 20,
                    label: 4
                },
            ]
        );
        let lines: Vec<usize> = list.issues.iter().map(|i| i.line).collect();
        assert_eq!(lines, [5, 6, 7, 8]);
        assert!(matches!(list.issues[0].error, ClipError::LineFields { .. }));
        assert!(matches!(list.issues[1].error, ClipError::NumFrames { .. }));
        assert!(matches!(list.issues[2].error, ClipError::Label { .. }));
        assert!(matches!(list.issues[3].error, ClipError::NumFrames { .. }));
        let message = list.issues[2].to_string();
        assert!(
            message.contains("list.txt:7") && message.contains("clips/e"),
            "{message}"
        );
    }

    #[test]
    fn a_list_without_clips_is_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "list.txt", "# nothing\n\n");
        assert!(matches!(
            ClipList::read(&path, None),
            Err(DatasetError::EmptyList { .. })
        ));
        let missing = dir.path().join("missing.txt");
        assert!(matches!(
            ClipList::read(&missing, None),
            Err(DatasetError::ListIo { .. })
        ));
    }

    #[test]
    fn frames_are_the_sorted_image_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["b.PNG", "a.jpg", "c.jpeg", "notes.txt"] {
            write(dir.path(), name, "");
        }
        let files = frame_files(dir.path(), 3).expect("files");
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.jpg", "b.PNG", "c.jpeg"]);
        assert!(matches!(
            frame_files(dir.path(), 4),
            Err(ClipError::FrameCount {
                listed: 4,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            frame_files(&dir.path().join("nope"), 1),
            Err(ClipError::MissingDir { .. })
        ));
    }

    #[test]
    fn box_entries_are_checked_on_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "faces.json",
            r#"{"c/1.png": [1, 2.5, 30, 40], "c/2.png": null, "c/3.png": [1, 2], "c/4.png": "x"}"#,
        );
        let boxes = BoxFile::read(&path).expect("read");
        assert_eq!(
            boxes.get("c/1.png").expect("ok"),
            Some([1.0, 2.5, 30.0, 40.0])
        );
        assert_eq!(boxes.get("c/2.png").expect("ok"), None);
        assert_eq!(boxes.get("c/5.png").expect("ok"), None);
        let err = boxes.get("c/3.png").unwrap_err();
        assert!(
            err.to_string().contains("faces.json") && err.to_string().contains("c/3.png"),
            "{err}"
        );
        assert!(boxes.get("c/4.png").is_err());
    }

    #[test]
    fn unparsable_box_files_are_fatal_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "faces.json", "{\"a\": [1, 2, 3, 4],");
        let err = BoxFile::read(&path).unwrap_err();
        assert!(
            matches!(err, DatasetError::BoxJson { .. }) && err.to_string().contains("faces.json")
        );
        let path = write(dir.path(), "bodies.json", "[[1, 2, 3, 4]]");
        let err = BoxFile::read(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DatasetError::BoxNotObject {
                    found: "an array",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn face_keys_join_the_listed_dir_and_the_file_name() {
        assert_eq!(
            face_key("clips/s01", Path::new("/data/clips/s01/000001.jpg")),
            "clips/s01/000001.jpg"
        );
    }
}
