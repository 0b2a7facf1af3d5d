//! `fer`: train and evaluate the FER2013 models natively, with the same library code the
//! browser runs, so every figure the page shows can be reproduced from a terminal.

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

/// `wasm-pack test` builds every binary of the crate for wasm32 too; the CLI is native-only.
#[cfg(target_arch = "wasm32")]
fn main() {}
