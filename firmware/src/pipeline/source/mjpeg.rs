//! MJPEG camera frames to RGB.
//!
//! Each frame is a JPEG, decoded by libjpeg-turbo ([`crate::pipeline::decode`]: Pillow's decoder, bit
//! for bit, and faster than the pure-Rust ones) into an RGB frame of the size the stream was
//! set up with; a header that announces any other size is refused before allocating for it.
//! UVC webcams send their frames without Huffman tables (no DHT segment: USB's video class
//! makes the tables of ITU-T T.81 Annex K.3 implicit); libjpeg-turbo uses those standard
//! tables when a frame has none, so such frames need no repair.

use image::RgbImage;

use super::SourceError;
use crate::pipeline::decode::jpeg_to_rgb;

/// Decodes one MJPEG frame of a `width`x`height` stream to RGB.
pub fn decode(jpeg: &[u8], width: u32, height: u32) -> Result<RgbImage, SourceError> {
    jpeg_to_rgb(jpeg, Some((width, height))).map_err(SourceError::Jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::DecodeError;

    fn test_image(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                ((x + y) % 64 * 4) as u8,
            ])
        })
    }

    fn encode(image: &RgbImage) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(image)
            .expect("encode test jpeg");
        jpeg
    }

    /// Removes every DHT segment, as UVC cameras send their frames.
    fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let sos = jpeg
            .windows(2)
            .position(|w| w == [0xFF, MARKER_SOS])
            .expect("has a scan");
        let mut out = jpeg[..2].to_vec();
        let mut pos = 2;
        while pos < sos {
            let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
            if jpeg[pos + 1] != MARKER_DHT {
                out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
            }
            pos += 2 + len;
        }
        out.extend_from_slice(&jpeg[sos..]);
        out
    }

    const MARKER_DHT: u8 = 0xC4;
    const MARKER_SOS: u8 = 0xDA;

    #[test]
    fn decoding_agrees_with_the_still_image_path() {
        let jpeg = encode(&test_image(64, 48));
        assert_eq!(
            decode(&jpeg, 64, 48).expect("mjpeg"),
            crate::pipeline::decode::to_rgb(&jpeg).expect("still")
        );
    }

    #[test]
    fn decodes_a_complete_jpeg_close_to_the_original() {
        let original = test_image(64, 48);
        let jpeg = encode(&original);
        let decoded = decode(&jpeg, 64, 48).expect("decode");
        let err: u64 = decoded
            .as_raw()
            .iter()
            .zip(original.as_raw())
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        let mean = err as f64 / original.as_raw().len() as f64;
        assert!(mean < 4.0, "mean abs error {mean}");
    }

    #[test]
    fn decodes_a_frame_without_huffman_tables_like_the_complete_one() {
        let jpeg = encode(&test_image(64, 48));
        let stripped = strip_huffman_tables(&jpeg);
        assert!(
            !stripped.windows(2).any(|w| w == [0xFF, MARKER_DHT]),
            "dht left"
        );
        // libjpeg-turbo falls back to the standard tables, which the `image` encoder wrote:
        // exactly the complete frame's pixels.
        let (full, no_tables) = (
            decode(&jpeg, 64, 48).expect("full"),
            decode(&stripped, 64, 48).expect("stripped"),
        );
        assert_eq!(full, no_tables);
    }

    #[test]
    fn a_frame_of_another_size_or_garbage_is_an_error() {
        let jpeg = encode(&test_image(32, 16));
        assert!(matches!(
            decode(&jpeg, 64, 48),
            Err(SourceError::Jpeg(DecodeError::FrameSize {
                found_width: 32,
                found_height: 16,
                ..
            }))
        ));
        let err = decode(b"\xFF\xD8 not really a jpeg", 64, 48).expect_err("garbage");
        assert!(
            err.is_transient(),
            "one corrupt frame must not stop a camera: {err}"
        );
    }
}
