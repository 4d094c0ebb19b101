//! Labelled clips in the RAER layout (`docs/dataset.md`): the list file, frame directories
//! and the optional face and body box files, read as the official CLIP-CAER loader reads them.
//!
//! - List file: one clip a line, `<frame_dir> <num_frames> <label 1..5>`, white-space
//!   separated; blank lines and lines starting with `#` are skipped. `frame_dir` is relative
//!   to the dataset root (`--root`, by default the list file's folder) unless absolute.
//! - Frames: every entry of `frame_dir` whose name does not start with `.`, sorted by name
//!   (the official `sorted(glob(frame_dir/*))`). The sampling uses the list's `num_frames`,
//!   and the sampled indices point into that listing, so the folder must hold at least
//!   `num_frames` entries (more are allowed, as in the official loader).
//! - Face boxes, in either of two formats, told apart entry by entry: the official one,
//!   `{"<frame_dir>": {"<file>": [l, t, r, b]}}`, keyed by the directory string as the
//!   official loader builds it (the list's `frame_dir` without trailing `/`), and the
//!   project's flat one, `{"<frame_dir>/<file>": [l, t, r, b]}`. Body boxes:
//!   `{"<frame_dir>": [l, t, r, b]}` (as written, or without trailing `/`). Several files of
//!   one kind are merged in order, a later file's top-level entry replacing an earlier one
//!   (the official loader merges two face box files and two body box files so). A missing
//!   entry or `null` means the whole frame, as in the reference.
//!
//! Error policy: a malformed line, a missing directory, too few frames or a malformed box
//! entry concerns one clip ([`ClipError`], the clip is skipped); a list or box file that
//! cannot be read or parsed at all, or is over [`MAX_BOX_FILE_BYTES`], is fatal
//! ([`DatasetError`]): running on without the boxes would silently measure another thing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use caer::pipeline::preprocess::PixelBox;
use serde_json::Value;

use crate::error::{ClipError, ClipIssue, DatasetError};

/// The largest box file read (RAER's annotation files are a few MB).
pub const MAX_BOX_FILE_BYTES: u64 = 256 << 20;

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

/// The frame files of `dir` as the official loader lists them: every entry whose name does
/// not start with `.`, sorted by name; at least `listed` of them.
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
        let entry = entry.map_err(read_err)?;
        // glob's `*` skips hidden names; the byte order of the names is Python's str order.
        if !entry.file_name().as_encoded_bytes().starts_with(b".") {
            files.push(entry.path());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.len() < listed {
        return Err(ClipError::FrameCount {
            path: dir.to_owned(),
            listed,
            found: files.len(),
        });
    }
    Ok(files)
}

/// The directory string the official loader keys boxes by: `os.path.dirname` of a frame path
/// joined to `frame_dir`, i.e. `frame_dir` without its trailing `/`.
pub fn official_dir_key(frame_dir: &str) -> &str {
    let trimmed = frame_dir.trim_end_matches('/');
    if trimmed.is_empty() {
        frame_dir
    } else {
        trimmed
    }
}

/// Face or body box files: JSON objects from keys to boxes, merged in order. Entries are
/// checked when a clip asks for them, so a malformed entry skips only the clips that use it.
#[derive(Debug, Clone)]
pub struct BoxFile {
    paths: Vec<PathBuf>,
    /// Each key's value, with the index in `paths` of the file it came from.
    entries: HashMap<String, (usize, Value)>,
}

impl BoxFile {
    /// Reads and parses one file; fails if it is not a JSON object.
    pub fn read(path: &Path) -> Result<BoxFile, DatasetError> {
        Self::read_merged(std::slice::from_ref(&path.to_owned()))
    }

    /// Reads `paths` in order; a later file's top-level entry replaces an earlier one (Python's
    /// `dict.update`, as the official loader merges its files).
    pub fn read_merged(paths: &[PathBuf]) -> Result<BoxFile, DatasetError> {
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            for (key, value) in read_object(path)? {
                entries.insert(key, (index, value));
            }
        }
        Ok(BoxFile {
            paths: paths.to_vec(),
            entries,
        })
    }

    /// The files, in merge order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Top-level entries after merging.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The face box of `file_name` in `frame_dir`: the official nested entry
    /// `[dir][file_name]` if the directory has one, else the flat `"<frame_dir>/<file_name>"`;
    /// `None` if neither exists or it is `null`.
    pub fn face(&self, frame_dir: &str, file_name: &str) -> Result<Option<PixelBox>, ClipError> {
        let dir = official_dir_key(frame_dir);
        if let Some((index, Value::Object(files))) = self.entries.get(dir) {
            return match files.get(file_name) {
                Some(value) => self.parse(*index, &format!("{dir}/{file_name}"), value),
                None => Ok(None),
            };
        }
        self.get(&format!("{frame_dir}/{file_name}"))
    }

    /// The body box of `frame_dir`, keyed as written or as the official loader keys it.
    pub fn body(&self, frame_dir: &str) -> Result<Option<PixelBox>, ClipError> {
        if self.entries.contains_key(frame_dir) {
            self.get(frame_dir)
        } else {
            self.get(official_dir_key(frame_dir))
        }
    }

    /// The box of a top-level `key`: `None` if the key is missing or `null`; an error naming
    /// the file and the key if the entry is not four finite numbers.
    pub fn get(&self, key: &str) -> Result<Option<PixelBox>, ClipError> {
        match self.entries.get(key) {
            Some((index, value)) => self.parse(*index, key, value),
            None => Ok(None),
        }
    }

    fn parse(&self, index: usize, key: &str, value: &Value) -> Result<Option<PixelBox>, ClipError> {
        let bad = || ClipError::BadBox {
            path: self.paths[index].clone(),
            key: key.to_owned(),
            found: truncate(&value.to_string(), 80),
        };
        match value {
            Value::Null => Ok(None),
            Value::Array(items) if items.len() == 4 => {
                let mut bbox = [0f64; 4];
                for (out, item) in bbox.iter_mut().zip(items) {
                    *out = item.as_f64().filter(|v| v.is_finite()).ok_or_else(bad)?;
                }
                Ok(Some(bbox))
            }
            _ => Err(bad()),
        }
    }
}

/// One box file's top-level object, read with a size cap.
fn read_object(path: &Path) -> Result<serde_json::Map<String, Value>, DatasetError> {
    let io = |source| DatasetError::BoxIo {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_BOX_FILE_BYTES + 1),
        &mut text,
    )
    .map_err(io)?;
    if text.len() as u64 > MAX_BOX_FILE_BYTES {
        return Err(DatasetError::BoxTooLarge {
            path: path.to_owned(),
            limit: MAX_BOX_FILE_BYTES,
        });
    }
    let value: Value = serde_json::from_str(&text).map_err(|source| DatasetError::BoxJson {
        path: path.to_owned(),
        source,
    })?;
    let found = match value {
        Value::Object(map) => return Ok(map),
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

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
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
    fn frames_are_the_sorted_entries_not_starting_with_a_dot() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["b.PNG", "a.jpg", "c.jpeg", "B.png", ".hidden.jpg"] {
            write(dir.path(), name, "");
        }
        let files = frame_files(dir.path(), 3).expect("files");
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_owned())
            .collect();
        // Python sorts by code point: upper case before lower case.
        assert_eq!(names, ["B.png", "a.jpg", "b.PNG", "c.jpeg"]);
        assert_eq!(frame_files(dir.path(), 4).expect("files").len(), 4);
        assert!(matches!(
            frame_files(dir.path(), 5),
            Err(ClipError::FrameCount {
                listed: 5,
                found: 4,
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
    fn official_nested_face_boxes_and_flat_ones_both_resolve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let official = write(
            dir.path(),
            "official.json",
            r#"{"/data/c1": {"1.jpg": [1, 2, 3, 4], "2.jpg": null}, "/data/c2": {"1.jpg": [5, 6, 7, 8]}}"#,
        );
        let flat = write(dir.path(), "flat.json", r#"{"c3/1.jpg": [9, 9, 19, 19]}"#);
        let boxes = BoxFile::read_merged(&[official, flat]).expect("read");
        // The official loader keys by dirname(join(frame_dir, file)): no trailing slash.
        assert_eq!(
            boxes.face("/data/c1/", "1.jpg").expect("ok"),
            Some([1.0, 2.0, 3.0, 4.0])
        );
        assert_eq!(boxes.face("/data/c1", "2.jpg").expect("ok"), None);
        assert_eq!(boxes.face("/data/c1", "3.jpg").expect("ok"), None);
        assert_eq!(
            boxes.face("c3", "1.jpg").expect("ok"),
            Some([9.0, 9.0, 19.0, 19.0])
        );
        assert_eq!(official_dir_key("a/b//"), "a/b");
        assert_eq!(official_dir_key("/"), "/");
    }

    #[test]
    fn merged_files_replace_top_level_entries_like_dict_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = write(
            dir.path(),
            "a.json",
            r#"{"c1": {"1.jpg": [1, 1, 2, 2], "2.jpg": [1, 1, 2, 2]}, "c2": [0, 0, 5, 5]}"#,
        );
        let second = write(dir.path(), "b.json", r#"{"c1": {"1.jpg": [3, 3, 4, 4]}}"#);
        let boxes = BoxFile::read_merged(&[first.clone(), second]).expect("read");
        assert_eq!(
            boxes.face("c1", "1.jpg").expect("ok"),
            Some([3.0, 3.0, 4.0, 4.0])
        );
        // The second file's "c1" replaced the first's whole entry.
        assert_eq!(boxes.face("c1", "2.jpg").expect("ok"), None);
        assert_eq!(boxes.body("c2/").expect("ok"), Some([0.0, 0.0, 5.0, 5.0]));
        let bad = write(dir.path(), "bad.json", r#"{"c9": {"1.jpg": [1, 2]}}"#);
        let boxes = BoxFile::read_merged(&[first, bad]).expect("read");
        let err = boxes.face("c9", "1.jpg").unwrap_err();
        assert!(
            err.to_string().contains("bad.json") && err.to_string().contains("c9/1.jpg"),
            "{err}"
        );
    }
}
