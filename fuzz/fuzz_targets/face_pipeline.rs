//! The camera's pipeline on frames of any size and pixels: found faces lie in the frame, and
//! every face gets seven probabilities; a frame size out of range is an error, never a panic.
#![no_main]

use fer_cnn::engine::Network;
use fer_cnn::face::{FacePipeline, Frame, FrameKind, TinyFaceDetector};
use fer_cnn::models::preset;
use libfuzzer_sys::fuzz_target;

const MANIFEST: &str = include_str!("../../www/node_modules/@vladmandic/face-api/model/tiny_face_detector_model-weights_manifest.json");
const WEIGHTS: &[u8] = include_bytes!("../../www/node_modules/@vladmandic/face-api/model/tiny_face_detector_model.bin");

fn detector() -> TinyFaceDetector {
    TinyFaceDetector::from_tfjs(MANIFEST, WEIGHTS).expect("the npm weights load")
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 5 {
        return;
    }
    // Sizes up to 1023 x 1023 (and 0), pixels from the rest of the input, repeated.
    let width = u16::from_le_bytes([input[0], input[1]]) as usize % 1024;
    let height = u16::from_le_bytes([input[2], input[3]]) as usize % 1024;
    let kind = if input[4] % 2 == 0 { FrameKind::Video } else { FrameKind::Photo };
    let pixels = &input[5..];
    let rgba: Vec<u8> = if pixels.is_empty() { vec![0; width * height * 4] } else { pixels.iter().copied().cycle().take(width * height * 4).collect() };
    let Ok(frame) = Frame::new(&rgba, width, height) else { return };
    let mut pipeline = FacePipeline::new(detector());
    let mut classifier = Network::new(preset("seed").expect("preset"), 1).expect("builds");
    let count = match pipeline.run(&frame, kind, &mut classifier, || 0.0) {
        Ok(count) => count,
        Err(_) => return,
    };
    assert_eq!(pipeline.faces().len(), count);
    for (face, probs) in pipeline.faces().iter().zip(pipeline.probs()) {
        let rect = face.detection.rect;
        assert!(rect.left.is_finite() && rect.top.is_finite() && rect.width >= 0.0 && rect.height >= 0.0);
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-3, "{probs:?}");
    }
});
