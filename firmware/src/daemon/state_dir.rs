//! The daemon's state directory, used only through directory handles.
//!
//! Every file under `state_dir` is opened, created, renamed and deleted relative to an open
//! handle of its directory, with `O_NOFOLLOW`: a symlink planted in the state directory
//! (`outbox/ledger.tmp -> /etc/passwd`, an `outbox` that is itself a link) is refused with
//! `ELOOP` (or `ENOTDIR`) instead of followed, so the daemon never writes outside it. Names are
//! single path components; anything else is refused before a system call is made.
//!
//! Replacing a file is atomic: a fresh `<name>.tmp` (any old one, link or not, is removed
//! first: `unlinkat` removes a link, never its target), written, fsynced, renamed over
//! `<name>`, then the directory fsynced.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};

/// Mode of the files the daemon creates: owner read-write, group read.
const FILE_MODE: u32 = 0o640;
/// Mode of the directories it creates.
const DIR_MODE: u32 = 0o750;

/// An open directory of the state tree.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
}

fn invalid(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{name:?} is not a single file name"),
    )
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(invalid(name));
    }
    Ok(())
}

fn dir_flags() -> OFlags {
    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY
}

impl StateDir {
    /// Opens `path`, creating it (and its parents) if missing; its last component must be a
    /// real directory, not a link.
    pub fn open(path: &Path) -> io::Result<StateDir> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match rustix::fs::mkdir(path, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat(CWD, path, dir_flags(), Mode::empty())?;
        Ok(StateDir {
            path: path.to_owned(),
            fd,
        })
    }

    /// The directory `name` inside this one, created if missing; refused if it is a link.
    pub fn subdir(&self, name: &str) -> io::Result<StateDir> {
        check_name(name)?;
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => self.sync()?,
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty())?;
        Ok(StateDir {
            path: self.path.join(name),
            fd,
        })
    }

    /// This directory's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory (for messages).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn open_at(&self, name: &str, flags: OFlags) -> io::Result<File> {
        check_name(name)?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )?;
        Ok(File::from(fd))
    }

    /// The contents of `name`, at most `max_bytes` of them (more is an error); `None` if
    /// there is no such file.
    pub fn read(&self, name: &str, max_bytes: u64) -> io::Result<Option<Vec<u8>>> {
        let file = match self.open_at(name, OFlags::RDONLY) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        crate::pipeline::files::read_capped_from(file, max_bytes).map(Some)
    }

    /// Creates `name`, which must not exist, for appending.
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        self.open_at(
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::APPEND,
        )
    }

    /// Replaces `name` with `data` atomically (see the module docs).
    pub fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let tmp = format!("{name}.tmp");
        self.remove_if_present(&tmp)?;
        let mut file = self.create_new(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
        self.sync()
    }

    /// Renames `from` to `to` inside this directory.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        rustix::fs::renameat(&self.fd, from, &self.fd, to)?;
        Ok(())
    }

    /// Deletes the file (or link) `name`.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?;
        Ok(())
    }

    /// Deletes `name` if it exists.
    pub fn remove_if_present(&self, name: &str) -> io::Result<()> {
        match self.remove(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Opens `name` for appending, creating it if missing (a link is refused).
    pub fn open_append(&self, name: &str) -> io::Result<File> {
        self.open_at(name, OFlags::CREATE | OFlags::WRONLY | OFlags::APPEND)
    }

    /// Opens the regular file `name` for reading (a link is refused).
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        self.open_at(name, OFlags::RDONLY)
    }

    /// The size of the regular file `name`; `None` if there is none. Anything else in its
    /// place (a link, a directory) is an error.
    pub fn file_len(&self, name: &str) -> io::Result<Option<u64>> {
        check_name(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) if FileType::from_raw_mode(s.st_mode) == FileType::RegularFile => {
                Ok(Some(s.st_size as u64))
            }
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name:?} is not a regular file"),
            )),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The directory `name` inside this one, if it exists (a link is refused).
    pub fn existing_subdir(&self, name: &str) -> io::Result<Option<StateDir>> {
        check_name(name)?;
        match rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(Some(StateDir {
                path: self.path.join(name),
                fd,
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the directory `name` and everything in it, if it exists. Links inside are
    /// removed, never followed.
    pub fn remove_dir_all(&self, name: &str) -> io::Result<()> {
        let Some(dir) = self.existing_subdir(name)? else {
            return Ok(());
        };
        for (entry, _) in dir.entries()? {
            match rustix::fs::unlinkat(&dir.fd, entry.as_str(), AtFlags::empty()) {
                Err(rustix::io::Errno::ISDIR | rustix::io::Errno::PERM) => {
                    dir.remove_dir_all(&entry)?
                }
                other => other?,
            }
        }
        drop(dir);
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?;
        self.sync()
    }

    /// Bytes free for an unprivileged writer on this directory's file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let s = rustix::fs::fstatvfs(&self.fd)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Makes the directory's entries durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }

    /// The names in this directory and whether each is a regular file (links, directories
    /// and others are not), `.` and `..` left out.
    pub fn entries(&self) -> io::Result<Vec<(String, bool)>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let regular = match entry.file_type() {
                FileType::RegularFile => true,
                FileType::Unknown => rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|s| FileType::from_raw_mode(s.st_mode) == FileType::RegularFile)
                    .unwrap_or(false),
                _ => false,
            };
            out.push((name.to_owned(), regular));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        let dir = StateDir::open(&tmp.path().join("state")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("state.json")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("state.json.tmp")).unwrap();
        // Replacing removes the planted .tmp link and the new file replaces the link.
        dir.replace("state.json", b"new").unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert_eq!(
            dir.read("state.json", 100).unwrap().as_deref(),
            Some(&b"new"[..])
        );
        // Reading or creating through a link fails.
        std::os::unix::fs::symlink(&outside, dir.join("ledger")).unwrap();
        assert!(dir.read("ledger", 100).is_err());
        assert!(dir.create_new("ledger").is_err());
        // A subdirectory that is a link is refused.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("outbox")).unwrap();
        assert!(dir.subdir("outbox").is_err());
        // And a state directory that is a link.
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join("linked")).unwrap();
        assert!(StateDir::open(&tmp.path().join("linked")).is_err());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn names_must_be_single_components_and_reads_are_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        for bad in ["", ".", "..", "../x", "a/b"] {
            assert!(dir.create_new(bad).is_err(), "{bad:?}");
        }
        dir.replace("f", &[7; 10]).unwrap();
        assert!(dir.read("f", 9).is_err());
        assert_eq!(dir.read("missing", 9).unwrap(), None);
        let sub = dir.subdir("outbox").unwrap();
        sub.create_new("a.seg").unwrap();
        std::fs::create_dir(sub.join("b.seg")).unwrap();
        let mut entries = sub.entries().unwrap();
        entries.sort();
        assert_eq!(
            entries,
            [("a.seg".to_owned(), true), ("b.seg".to_owned(), false)]
        );
    }
}
