//! The owned camera frame that every stage of the pipeline passes on.
//!
//! A [`Frame`] is produced by a [`crate::pipeline::source::FrameSource`], read by the face detector
//! and the crop/preprocessing step, and dropped once the classifier has taken what it needs.
//! Frames live only in memory: no stage writes one anywhere.
//!
//! Invariants: `sequence` grows by one per frame a source delivers (gaps mean the source
//! skipped frames, e.g. a camera reconnect); `image` always holds `width * height` RGB8
//! pixels (guaranteed by [`image::RgbImage`]). Boxes are `[left, top, right, bottom]` in
//! pixels, as everywhere in this crate.

use std::time::Instant;

use crate::pipeline::preprocess::RgbFrame;

/// One RGB frame with its capture metadata.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The pixels, RGB8, row-major.
    pub image: image::RgbImage,
    /// Position of the frame in its source's stream, from 0.
    pub sequence: u64,
    /// When the frame was captured (or produced, for files and generated frames).
    pub captured_at: Instant,
    /// Known face boxes `[left, top, right, bottom]` in pixels, given by bench and generated
    /// sources; `None` for real cameras (the detector finds the faces).
    pub annotations: Option<Vec<[f32; 4]>>,
}

impl Frame {
    /// A frame captured now, without annotations.
    pub fn new(image: image::RgbImage, sequence: u64) -> Self {
        Frame {
            image,
            sequence,
            captured_at: Instant::now(),
            annotations: None,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.image.width()
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.image.height()
    }

    /// A borrowed view for [`crate::pipeline::preprocess::Preprocessor`].
    pub fn rgb(&self) -> RgbFrame<'_> {
        RgbFrame::from(&self.image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_view_has_the_frame_size_and_pixels() {
        let mut image = image::RgbImage::new(4, 3);
        image.put_pixel(3, 2, image::Rgb([1, 2, 3]));
        let frame = Frame::new(image, 7);
        let view = frame.rgb();
        assert_eq!((view.width(), view.height()), (4, 3));
        assert_eq!(&view.pixels()[view.pixels().len() - 3..], &[1, 2, 3]);
        assert_eq!((frame.width(), frame.height(), frame.sequence), (4, 3, 7));
        assert!(frame.annotations.is_none());
    }
}
