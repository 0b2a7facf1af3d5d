//! The model-file loader on any bytes: a file is refused with an error or loads, never a panic
//! or an allocation the file merely asks for; a model that loads classifies a face.
#![no_main]

use fer_cnn::inference::{predict_faces, Tta};
use fer_cnn::models::load_model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(mut loaded) = load_model(bytes) {
        let probs = predict_faces(&mut loaded.network, &[128u8; 48 * 48], Tta::None);
        assert_eq!(probs.dim(), (1, 7));
    }
});
