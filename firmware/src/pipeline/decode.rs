//! Image decoding as the reference decodes: JPEG through libjpeg-turbo, PNG through `image`.
//!
//! The official loader opens frames with Pillow, whose JPEG decoder is libjpeg-turbo with its
//! defaults (accurate integer IDCT, fancy upsampling). TurboJPEG with its defaults gives the
//! same bytes: measured on 42 files (4:2:0, 4:2:2, 4:4:4, 4:4:0, 4:1:1, greyscale,
//! progressive, restart intervals, odd sizes, FFmpeg's MJPEG), 0 values differed from Pillow
//! 13 (bundling libjpeg-turbo 3.2.0), with libjpeg-turbo 2.1.5 and 3.1.0 alike; pure-Rust
//! decoders (zune-jpeg, which `image` uses) differed on up to 22 % of the values by up to 4
//! levels, which moves the model's logits by up to 2e-2. libjpeg-turbo also reads the frames
//! UVC webcams send without Huffman tables (it falls back to the standard ones), and was
//! 15-20 % faster than zune-jpeg on 1080p frames, so the camera's MJPEG goes through it too.
//!
//! Bounds, for hostile files: a file is read only up to [`MAX_FILE_BYTES`], and a header that
//! announces more than [`MAX_PIXELS`] pixels (or, for a camera frame, another size than the
//! stream's) is refused before any pixel buffer is allocated.

use std::path::Path;

use image::RgbImage;

/// The largest image file read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The most pixels a decoded image may have (4096 x 4096; a 4K frame is 3840 x 2160).
pub const MAX_PIXELS: u64 = 4096 * 4096;

/// Why an image could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The file cannot be read.
    #[error("cannot read the file: {0}")]
    Io(#[source] std::io::Error),
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("the file is larger than {limit} bytes")]
    FileTooLarge {
        /// The cap.
        limit: u64,
    },
    /// libjpeg-turbo refused the data.
    #[error("cannot decode jpeg: {0}")]
    Jpeg(#[source] turbojpeg::Error),
    /// `image` refused the data (PNG and other formats).
    #[error("cannot decode image: {0}")]
    Image(#[source] image::ImageError),
    /// The header announces more pixels than [`MAX_PIXELS`].
    #[error("image is {width}x{height}, more than {limit} pixels")]
    TooManyPixels {
        /// Announced width.
        width: u64,
        /// Announced height.
        height: u64,
        /// The cap.
        limit: u64,
    },
    /// A camera frame whose header announces another size than the stream's.
    #[error("frame is {found_width}x{found_height}; the stream is {width}x{height}")]
    FrameSize {
        /// The stream's width.
        width: u32,
        /// The stream's height.
        height: u32,
        /// The frame's width.
        found_width: u32,
        /// The frame's height.
        found_height: u32,
    },
}

fn check_pixels(width: u64, height: u64) -> Result<(), DecodeError> {
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit: MAX_PIXELS,
        });
    }
    Ok(())
}

/// Whether `data` starts like a JPEG file (SOI marker).
fn is_jpeg(data: &[u8]) -> bool {
    data.starts_with(&[0xFF, 0xD8])
}

/// Decodes a JPEG to RGB with libjpeg-turbo's defaults; `expected` refuses another size.
pub fn jpeg_to_rgb(data: &[u8], expected: Option<(u32, u32)>) -> Result<RgbImage, DecodeError> {
    let mut decompressor = turbojpeg::Decompressor::new().map_err(DecodeError::Jpeg)?;
    let header = decompressor.read_header(data).map_err(DecodeError::Jpeg)?;
    let (width, height) = (header.width as u64, header.height as u64);
    if let Some((w, h)) = expected {
        if (width, height) != (u64::from(w), u64::from(h)) {
            return Err(DecodeError::FrameSize {
                width: w,
                height: h,
                found_width: u32::try_from(width).unwrap_or(u32::MAX),
                found_height: u32::try_from(height).unwrap_or(u32::MAX),
            });
        }
    }
    check_pixels(width, height)?;
    // Both fit in u32 now (their product is at most MAX_PIXELS).
    let mut pixels = vec![0u8; header.width * header.height * 3];
    let output = turbojpeg::Image {
        pixels: &mut pixels[..],
        width: header.width,
        pitch: header.width * 3,
        height: header.height,
        format: turbojpeg::PixelFormat::RGB,
    };
    decompressor
        .decompress(data, output)
        .map_err(DecodeError::Jpeg)?;
    Ok(RgbImage::from_raw(width as u32, height as u32, pixels).expect("3 bytes per pixel"))
}

/// Decodes an image in memory to RGB: JPEG with libjpeg-turbo, anything else with `image`.
pub fn to_rgb(data: &[u8]) -> Result<RgbImage, DecodeError> {
    if is_jpeg(data) {
        return jpeg_to_rgb(data, None);
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| DecodeError::Image(image::ImageError::IoError(e)))?;
    // `image` checks the allocation a header asks for against this before allocating.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    Ok(reader.decode().map_err(DecodeError::Image)?.to_rgb8())
}

/// Reads and decodes an image file (at most [`MAX_FILE_BYTES`]); the caller names the file
/// in its own error.
pub fn file_to_rgb(path: &Path) -> Result<RgbImage, DecodeError> {
    let data = crate::pipeline::files::read_capped(path, MAX_FILE_BYTES).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            DecodeError::FileTooLarge {
                limit: MAX_FILE_BYTES,
            }
        } else {
            DecodeError::Io(e)
        }
    })?;
    to_rgb(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_image(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        })
    }

    fn encode_jpeg(image: &RgbImage) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(image)
            .expect("encode");
        jpeg
    }

    #[test]
    fn png_files_decode_exactly_and_jpeg_files_closely() {
        let dir = tempfile::tempdir().expect("tempdir");
        let original = test_image(33, 17);
        let png = dir.path().join("a.png");
        original.save(&png).expect("png");
        assert_eq!(file_to_rgb(&png).expect("png"), original);
        let jpg = dir.path().join("b.jpg");
        std::fs::write(&jpg, encode_jpeg(&original)).expect("jpg");
        let decoded = file_to_rgb(&jpg).expect("jpg");
        assert_eq!(decoded.dimensions(), (33, 17));
        let mean = decoded
            .as_raw()
            .iter()
            .zip(original.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / original.as_raw().len() as f64;
        assert!(mean < 12.0, "mean abs error {mean}");
    }

    #[test]
    fn bad_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("frame.jpg");
        std::fs::write(&garbage, b"\xFF\xD8 not a jpeg").expect("write");
        assert!(matches!(file_to_rgb(&garbage), Err(DecodeError::Jpeg(_))));
        let text = dir.path().join("notes.png");
        std::fs::write(&text, b"hello").expect("write");
        assert!(matches!(file_to_rgb(&text), Err(DecodeError::Image(_))));
        let missing = dir.path().join("missing.png");
        assert!(matches!(file_to_rgb(&missing), Err(DecodeError::Io(_))));
    }

    #[test]
    fn a_header_announcing_a_huge_image_is_refused_before_allocating() {
        // A valid 16x16 JPEG whose SOF0 claims 60000x60000.
        let mut jpeg = encode_jpeg(&test_image(16, 16));
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("baseline frame header");
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        assert!(matches!(
            jpeg_to_rgb(&jpeg, None),
            Err(DecodeError::TooManyPixels { .. })
        ));
        assert!(matches!(
            jpeg_to_rgb(&encode_jpeg(&test_image(32, 16)), Some((64, 48))),
            Err(DecodeError::FrameSize {
                found_width: 32,
                found_height: 16,
                ..
            })
        ));
    }
}
