//! A consistent change in how faces look, as a different camera, room and person would make
//! it: lower contrast, a brighter exposure, light from one side, blur and sensor noise. The
//! calibration tests fit a model to faces seen through it.

use super::Lcg;
use fer_cnn::data::{FACE_PIXELS, FACE_SIDE};

/// `face` (48x48) as the shifted camera would see it; `rng` draws the noise.
pub fn shifted_face(face: &[u8], rng: &mut Lcg) -> Vec<u8> {
    assert_eq!(face.len(), FACE_PIXELS);
    let at = |x: isize, y: isize| {
        let clamp = |v: isize| v.clamp(0, FACE_SIDE as isize - 1) as usize;
        face[clamp(y) * FACE_SIDE + clamp(x)] as f32
    };
    let mut out = vec![0u8; FACE_PIXELS];
    for y in 0..FACE_SIDE as isize {
        for x in 0..FACE_SIDE as isize {
            // 3x3 box blur.
            let mut sum = 0.0;
            for dy in -1..=1 {
                for dx in -1..=1 {
                    sum += at(x + dx, y + dy);
                }
            }
            let blurred = sum / 9.0;
            let contrast = 140.0 + 0.5 * (blurred - 128.0);
            let side_light = 0.7 + 0.6 * x as f32 / (FACE_SIDE - 1) as f32;
            // Roughly normal noise (sum of uniforms), standard deviation about 8.
            let noise = ((0..4).map(|_| (rng.next() % 1000) as f32 / 1000.0).sum::<f32>() - 2.0) * 14.0;
            out[y as usize * FACE_SIDE + x as usize] = (contrast * side_light + noise).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}
