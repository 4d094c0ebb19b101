//! Reading the files the pipeline is pointed at (calibrations, annotations, frames), with a
//! size cap: a file larger than its cap (or `/dev/zero` named by mistake) is refused after
//! reading at most one byte more than the cap, never read into memory whole.

use std::io::{self, Read};
use std::path::Path;

/// The contents of `path`, at most `max_bytes` of them; larger is an
/// [`io::ErrorKind::InvalidData`] error saying so.
pub fn read_capped(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    read_capped_from(std::fs::File::open(path)?, max_bytes)
}

/// At most `max_bytes` of `reader`; more is an [`io::ErrorKind::InvalidData`] error.
pub fn read_capped_from(reader: impl Read, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    reader.take(max_bytes + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max_bytes} bytes"),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_files_are_refused_after_the_cap() {
        let err = read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(read_capped(&path, 3).unwrap(), b"abc");
        assert!(read_capped(&path, 2).is_err());
    }
}
