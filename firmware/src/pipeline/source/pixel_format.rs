//! The camera pixel formats this firmware decodes, how one is chosen, and decoding a
//! camera buffer of that format into an RGB frame.
//!
//! Preference when a camera offers several: MJPEG (compressed, so USB 2 cameras offer
//! larger sizes and higher rates in it), then YUYV, then NV12.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::{mjpeg, yuv, SourceError};

/// A decodable camera pixel format (`"mjpeg"`, `"yuyv"`, `"nv12"` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Motion JPEG (`MJPG`): one JPEG per frame, often without Huffman tables.
    Mjpeg,
    /// Packed YUV 4:2:2 (`YUYV`).
    Yuyv,
    /// Semi-planar YUV 4:2:0 (`NV12`).
    Nv12,
}

impl PixelFormat {
    /// Every decodable format, most preferred first.
    pub const PREFERENCE: [PixelFormat; 3] =
        [PixelFormat::Mjpeg, PixelFormat::Yuyv, PixelFormat::Nv12];

    /// The V4L2 FourCC.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
        }
    }

    /// The format with this FourCC, if decodable.
    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<Self> {
        Self::PREFERENCE.into_iter().find(|f| f.fourcc() == fourcc)
    }

    /// The first format of `preference` among the FourCCs a camera offers.
    pub fn choose(preference: &[PixelFormat], offered: &[[u8; 4]]) -> Option<Self> {
        preference
            .iter()
            .copied()
            .find(|f| offered.contains(&f.fourcc()))
    }

    /// Decodes one buffer of a `width`x`height` stream with `stride` bytes per row (the
    /// camera's `bytesperline`; unused for MJPEG). `data` is the used part of the buffer.
    pub fn decode(
        self,
        data: &[u8],
        width: u32,
        height: u32,
        stride: u32,
    ) -> Result<RgbImage, SourceError> {
        match self {
            PixelFormat::Mjpeg => mjpeg::decode(data, width, height),
            PixelFormat::Yuyv => yuv::yuyv_to_rgb(data, width, height, stride),
            PixelFormat::Nv12 => yuv::nv12_to_rgb(data, width, height, stride),
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PixelFormat::Mjpeg => "MJPG",
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_offered_format_is_chosen() {
        let all = &PixelFormat::PREFERENCE;
        let yuyv_nv12 = [*b"NV12", *b"YUYV"];
        assert_eq!(
            PixelFormat::choose(all, &yuyv_nv12),
            Some(PixelFormat::Yuyv)
        );
        assert_eq!(
            PixelFormat::choose(all, &[*b"YUYV", *b"MJPG"]),
            Some(PixelFormat::Mjpeg)
        );
        assert_eq!(
            PixelFormat::choose(all, &[*b"NV12"]),
            Some(PixelFormat::Nv12)
        );
        assert_eq!(PixelFormat::choose(all, &[*b"RGB3", *b"H264"]), None);
        let nv12_only = [PixelFormat::Nv12];
        assert_eq!(
            PixelFormat::choose(&nv12_only, &yuyv_nv12),
            Some(PixelFormat::Nv12)
        );
        assert_eq!(PixelFormat::choose(&nv12_only, &[*b"YUYV"]), None);
        for f in PixelFormat::PREFERENCE {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(f.to_string().as_bytes(), f.fourcc());
        }
    }

    #[test]
    fn decode_dispatches_on_the_format() {
        // A 2x2 YUYV frame of mid grey, and the same bytes read as NV12 of a 2x2 frame
        // (4 luma + 2 chroma bytes) give grey too; as MJPEG they are not a JPEG.
        let grey = [126u8, 128, 126, 128, 126, 128, 126, 128];
        let rgb = PixelFormat::Yuyv.decode(&grey, 2, 2, 4).expect("yuyv");
        assert!(
            rgb.pixels()
                .all(|p| p.0.iter().all(|&c| (120..=135).contains(&c))),
            "{rgb:?}"
        );
        let rgb = PixelFormat::Nv12
            .decode(&[126, 126, 126, 126, 128, 128], 2, 2, 2)
            .expect("nv12");
        assert!(
            rgb.pixels()
                .all(|p| p.0.iter().all(|&c| (120..=135).contains(&c))),
            "{rgb:?}"
        );
        assert!(matches!(
            PixelFormat::Mjpeg.decode(&grey, 2, 2, 4),
            Err(SourceError::Jpeg(_))
        ));
    }
}
