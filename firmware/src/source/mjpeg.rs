//! MJPEG camera frames to RGB.
//!
//! UVC webcams send each MJPEG frame as a JPEG without Huffman tables (no DHT segment):
//! the USB video class makes the tables of ITU-T T.81 Annex K.3 implicit. Decoders that
//! expect complete JPEG files reject such frames, so [`with_huffman_tables`] inserts the
//! standard tables before the first scan when a frame has none. [`decode`] then decodes
//! with `zune-jpeg` into an RGB frame of the size the stream was set up with, refusing a
//! header that announces any other size before allocating for it.

use std::borrow::Cow;

use image::RgbImage;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::SourceError;

const MARKER_DHT: u8 = 0xC4;
const MARKER_SOS: u8 = 0xDA;

/// The standard DHT segment (T.81 Annex K.3): luminance DC and AC, chrominance DC and AC.
#[rustfmt::skip]
const STANDARD_DHT: [u8; 420] = [
    0xFF, MARKER_DHT, 0x01, 0xA2,
    // Luminance DC (class 0, id 0): code counts for lengths 1..16, then values.
    0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
    // Luminance AC (class 1, id 0).
    0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7D,
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
    // Chrominance DC (class 0, id 1).
    0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
    // Chrominance AC (class 1, id 1).
    0x11, 0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77,
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
    0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

/// Where the standard tables must go: `Some(offset of the first SOS marker)` when no DHT
/// segment precedes it, `None` when the frame has its tables or is not a parsable JPEG
/// (the decoder then reports what is wrong).
fn missing_tables_at(jpeg: &[u8]) -> Option<usize> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut pos = 2;
    loop {
        if *jpeg.get(pos)? != 0xFF {
            return None;
        }
        let marker_start = pos;
        while *jpeg.get(pos)? == 0xFF {
            pos += 1; // Fill bytes.
        }
        let marker = jpeg[pos];
        pos += 1;
        match marker {
            MARKER_DHT => return None,
            MARKER_SOS => return Some(marker_start),
            // Markers without a length: TEM, RST0-7.
            0x01 | 0xD0..=0xD7 => {}
            _ => {
                let len = u16::from_be_bytes([*jpeg.get(pos)?, *jpeg.get(pos + 1)?]);
                pos += usize::from(len);
            }
        }
    }
}

/// The frame with the standard Huffman tables inserted before its first scan if it has
/// none; the frame itself (no copy) otherwise.
pub fn with_huffman_tables(jpeg: &[u8]) -> Cow<'_, [u8]> {
    match missing_tables_at(jpeg) {
        None => Cow::Borrowed(jpeg),
        Some(at) => {
            let mut full = Vec::with_capacity(jpeg.len() + STANDARD_DHT.len());
            full.extend_from_slice(&jpeg[..at]);
            full.extend_from_slice(&STANDARD_DHT);
            full.extend_from_slice(&jpeg[at..]);
            Cow::Owned(full)
        }
    }
}

/// Decodes one MJPEG frame of a `width`x`height` stream to RGB.
pub fn decode(jpeg: &[u8], width: u32, height: u32) -> Result<RgbImage, SourceError> {
    let data = with_huffman_tables(jpeg);
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(width as usize)
        .set_max_height(height as usize);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(&data[..]), options);
    decoder.decode_headers().map_err(SourceError::Jpeg)?;
    let size_err = |found_width, found_height| SourceError::FrameSize {
        width,
        height,
        found_width,
        found_height,
    };
    let (w, h) = decoder
        .dimensions()
        .map(|(w, h)| (w as u32, h as u32))
        .ok_or_else(|| size_err(0, 0))?;
    if (w, h) != (width, height) {
        return Err(size_err(w, h));
    }
    let pixels = decoder.decode().map_err(SourceError::Jpeg)?;
    RgbImage::from_raw(width, height, pixels).ok_or_else(|| size_err(w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn standard_table_lengths_add_up() {
        let mut pos = 4;
        let mut tables = 0;
        while pos < STANDARD_DHT.len() {
            let count: usize = STANDARD_DHT[pos + 1..pos + 17]
                .iter()
                .map(|&c| usize::from(c))
                .sum();
            pos += 17 + count;
            tables += 1;
        }
        assert_eq!((pos, tables), (STANDARD_DHT.len(), 4));
        assert_eq!(
            usize::from(u16::from_be_bytes([STANDARD_DHT[2], STANDARD_DHT[3]])),
            STANDARD_DHT.len() - 2
        );
    }

    #[test]
    fn decodes_a_complete_jpeg_close_to_the_original() {
        let original = test_image(64, 48);
        let jpeg = encode(&original);
        assert!(
            matches!(with_huffman_tables(&jpeg), Cow::Borrowed(_)),
            "complete jpeg copied"
        );
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
        // The decoder alone cannot read it...
        let mut raw = JpegDecoder::new(ZCursor::new(&stripped[..]));
        assert!(
            raw.decode().is_err(),
            "zune-jpeg decoded a jpeg without tables by itself"
        );
        // ...with the standard tables it gives exactly the complete frame's pixels (the
        // `image` encoder writes the standard tables).
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
            Err(SourceError::FrameSize {
                found_width: 32,
                found_height: 16,
                ..
            })
        ));
        let err = decode(b"\xFF\xD8 not really a jpeg", 64, 48).expect_err("garbage");
        assert!(
            err.is_transient(),
            "one corrupt frame must not stop a camera: {err}"
        );
        assert!(matches!(
            with_huffman_tables(b"\xFF\xD8\xFF"),
            Cow::Borrowed(_)
        ));
    }
}
