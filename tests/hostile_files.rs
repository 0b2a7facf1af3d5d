//! Model files made to break the loader are refused, each with a message that names the
//! problem; none panics or allocates what the file claims (a billion filters is refused before
//! anything is allocated: this test would run out of memory otherwise).

#![cfg(not(target_arch = "wasm32"))]

mod common;

use fer_cnn::models::load_model;

#[test]
fn hostile_model_files_are_refused_naming_the_problem() {
    for (what, bytes, expected) in common::hostile::hostile_files() {
        let message = match load_model(&bytes) {
            Ok(_) => panic!("{what}: loaded"),
            Err(error) => error.to_string(),
        };
        eprintln!("{what}: {message}");
        assert!(message.contains(expected), "{what}: {message}");
    }
}
