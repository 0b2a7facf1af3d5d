#!/usr/bin/env bash
# One entry point for everything, on a fresh machine or a warm one:
#   ./build.sh            install what is missing, build the wasm, serve www/ on 127.0.0.1
#   ./build.sh test       install what is missing, run every test: formatting, native (cargo test),
#                         in Firefox (wasm-pack test --headless --firefox), and end-to-end
#                         page tests in headless Chromium
#   ./build.sh wasm       build the wasm packages into www/pkg and www/pkg-threads (and the
#                         page's npm assets)
#   ./build.sh setup      install the tools only
#   ./build.sh package    build the npm package fer-cnn into dist/fer-cnn-VERSION.tgz
#   ./build.sh bench      print speed figures (native and in-browser)
#   ./build.sh fuzz       run each fuzz target (fuzz/) for FUZZ_SECONDS (default 60) each
#   ./build.sh torch      install the PyTorch reference (reference/torch/) into .venv-torch
# Each install step is skipped when the tool is already there at the right version.
set -euo pipefail
cd "$(dirname "$0")"

PORT="${PORT:-8080}"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages: Firefox ESR for the wasm tests, Chromium for the end-to-end tests.
ensure_apt_packages() {
    local missing=()
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# cargo install NAME [VERSION]: skipped when `NAME --version` already reports VERSION (or any
# version when none is asked for).
ensure_cargo_tool() {
    local binary=$1 crate=$2 version=${3:-}
    if command -v "$binary" >/dev/null 2>&1; then
        if [ -z "$version" ] || "$binary" --version 2>/dev/null | grep -qF " $version"; then
            return
        fi
    fi
    log "cargo install $crate ${version:+$version}"
    cargo install -q "$crate" ${version:+--version "$version"}
}

wasm_bindgen_version() {
    # The CLI must match the wasm-bindgen crate in Cargo.lock exactly.
    awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

setup() {
    rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
    # The multi-threaded wasm rebuilds std with atomics: nightly's -Z build-std and rust-src.
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    rustup component list --toolchain nightly --installed | grep -q '^rust-src' || rustup component add rust-src --toolchain nightly
    rustup target list --toolchain nightly --installed | grep -q '^wasm32-unknown-unknown$' ||
        rustup target add wasm32-unknown-unknown --toolchain nightly
    ensure_apt_packages firefox-esr chromium
    [ -f Cargo.lock ] || cargo generate-lockfile
    ensure_cargo_tool wasm-bindgen wasm-bindgen-cli "$(wasm_bindgen_version)"
    ensure_cargo_tool wasm-pack wasm-pack
    ensure_cargo_tool geckodriver geckodriver
    ensure_npm_packages
    ensure_onnx_runtime
}

# A Python virtualenv VENV with the packages pinned in REQUIREMENTS, reinstalled only when that
# file changes.
ensure_venv() {
    local venv=$1 requirements=$2
    if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/installed-requirements.txt"; then
        return
    fi
    # Debian's python3 makes virtualenvs only with python3-venv (ensurepip) installed.
    python3 -c 'import ensurepip' 2>/dev/null || ensure_apt_packages python3-venv
    log "pip install -r $requirements into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/installed-requirements.txt"
}

# onnxruntime, for tests/onnx.rs: an independent runtime runs the exported models.
ensure_onnx_runtime() {
    ensure_venv .venv-onnx tests/onnx-requirements.txt
}

# The PyTorch reference (reference/torch/: our models as nn.Modules, a training script for GPUs,
# the known-answer generator). Torch is large, so it is installed only on demand and nothing in
# `./build.sh test` needs it.
ensure_torch_env() {
    ensure_venv .venv-torch reference/torch/requirements.txt
    log ".venv-torch is ready: .venv-torch/bin/python reference/torch/train.py --help (docs/reference.md)"
}

# npm packages, pinned by package-lock.json: the page's third-party assets and binaryen's
# wasm-opt (www/), and the end-to-end test driver (tests/e2e/). Reinstalled only when the lock
# file changes.
ensure_npm_packages() {
    for dir in www tests/e2e; do
        if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
            log "npm ci ($dir)"
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        fi
    done
}

# The training worker's multi-threaded build (rayon over Web Workers, see Cargo.toml's `threads`):
# shared memory needs atomics in every crate, std included, and these linker flags (as in
# wasm-bindgen's parallel raytracing example); up to 2 GiB of memory, for the whole data set.
# RUSTFLAGS replaces .cargo/config.toml's flags, so simd128 is repeated here.
THREADS_RUSTFLAGS="-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals \
-C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=2147483648 \
-C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size -C link-arg=--export=__tls_align \
-C link-arg=--export=__tls_base"

# wasm-opt -O3 from binaryen's npm package (wasm-pack's own step is off in Cargo.toml: it
# downloads binaryen, and Debian's is too old for wasm-bindgen's output): about a sixth smaller,
# as fast. The features are those the builds use.
WASM_OPT_FEATURES="--enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
--enable-mutable-globals --enable-reference-types --enable-multivalue"

optimise_wasm() {
    local wasm=$1; shift
    www/node_modules/.bin/wasm-opt -O3 $WASM_OPT_FEATURES "$@" "$wasm" -o "$wasm.opt"
    mv "$wasm.opt" "$wasm"
}

build_wasm() {
    log "building the wasm package into www/pkg"
    wasm-pack build --release --target web --out-dir www/pkg --no-typescript --no-pack >&2
    optimise_wasm www/pkg/fer_cnn_bg.wasm
    log "building the multi-threaded wasm package into www/pkg-threads (nightly)"
    RUSTUP_TOOLCHAIN=nightly CARGO_TARGET_DIR=target/threads RUSTFLAGS="$THREADS_RUSTFLAGS" \
        wasm-pack build --release --target web --out-dir www/pkg-threads --no-typescript --no-pack \
        -- --features threads -Z build-std=panic_abort,std >&2
    optimise_wasm www/pkg-threads/fer_cnn_bg.wasm --enable-threads
    mkdir -p www/vendor
    cp www/node_modules/uplot/dist/uPlot.esm.js www/node_modules/uplot/dist/uPlot.min.css www/vendor/
    # The camera's face detector: face-api.js's TinyFaceDetector weights (MIT), run by our Rust.
    mkdir -p www/vendor/face-detector
    cp www/node_modules/@vladmandic/face-api/model/tiny_face_detector_model.bin \
       www/node_modules/@vladmandic/face-api/model/tiny_face_detector_model-weights_manifest.json www/vendor/face-detector/
    cp www/node_modules/@vladmandic/face-api/LICENSE www/vendor/face-detector/LICENSE
}

crate_version() {
    awk -F'"' '/^version = / { print $2; exit }' Cargo.toml
}

# The npm package `fer-cnn`: the library (www/lib/), both engine builds, both models and the
# face detector's weights with its licence, laid out as in www/ so that every asset is found
# relative to the library's modules; packed by `npm pack` into dist/fer-cnn-VERSION.tgz.
# Expects build_wasm to have run.
build_package() {
    local version stage=target/package/fer-cnn
    version=$(crate_version)
    log "packing fer-cnn $version into dist/"
    rm -rf "$stage" && mkdir -p "$stage/lib" "$stage/vendor" dist
    cp www/lib/*.js www/lib/*.d.ts "$stage/lib/"
    cp www/lib/README.md "$stage/README.md"
    for build in pkg pkg-threads; do
        mkdir -p "$stage/$build"
        cp -r "www/$build/fer_cnn.js" "www/$build/fer_cnn_bg.wasm" "$stage/$build/"
        [ -d "www/$build/snippets" ] && cp -r "www/$build/snippets" "$stage/$build/"
    done
    cp -r www/models "$stage/models"
    cp -r www/vendor/face-detector "$stage/vendor/face-detector"
    cp LICENSE "$stage/LICENSE"
    node -e '
        const [version, description] = process.argv.slice(1);
        const manifest = {
            name: "fer-cnn", version, description, license: "MIT", type: "module",
            exports: {
                ".": {
                    node: { types: "./lib/node.d.ts", default: "./lib/node.js" },
                    types: "./lib/index.d.ts",
                    default: "./lib/index.js",
                },
                "./package.json": "./package.json",
            },
            types: "./lib/index.d.ts",
            sideEffects: ["./lib/worker-plain.js", "./lib/worker-threads.js", "./pkg/*.js", "./pkg-threads/**/*.js"],
            engines: { node: ">=20" },
            keywords: ["facial-expression", "emotion", "face-detection", "webassembly", "fer2013", "cnn"],
        };
        process.stdout.write(JSON.stringify(manifest, null, 2) + "\n");
    ' "$version" "Facial expressions from any image or video, in a worker: a CNN in Rust and WebAssembly (FER2013)" > "$stage/package.json"
    rm -f "dist/fer-cnn-$version.tgz"
    (cd "$stage" && npm pack --silent --pack-destination ../../../dist >/dev/null)
    ls -l "dist/fer-cnn-$version.tgz" >&2
}

serve() {
    log "serving www/ at http://127.0.0.1:$PORT/ (Ctrl-C to stop)"
    echo "http://127.0.0.1:$PORT/"
    python3 www-server.py "$PORT"
}

run_tests() {
    log "formatting (cargo fmt --check; rustfmt.toml)"
    cargo fmt --check
    log "native tests (cargo test)"
    cargo test --release
    log "browser tests (wasm-pack test --headless --firefox)"
    wasm-pack test --headless --firefox --release -- --test web
    log "end-to-end page and package tests (headless Chromium and Firefox)"
    build_wasm
    build_package
    node --test tests/e2e/
}

bench() {
    log "native speed (fer bench)"
    cargo run --release --quiet --bin fer -- bench
    build_wasm
    build_package
    if [ ! -f tests/e2e/bench/node_modules/.package-lock.json ] || [ tests/e2e/bench/package-lock.json -nt tests/e2e/bench/node_modules/.package-lock.json ]; then
        log "npm ci (tests/e2e/bench: TensorFlow.js, for the comparison only)"
        (cd tests/e2e/bench && npm ci --no-audit --no-fund --loglevel=error)
    fi
    for script in tests/e2e/bench-*.mjs; do
        [ -e "$script" ] || continue
        log "in-browser speed ($script)"
        node "$script"
    done
}

# cargo-fuzz on nightly: each target starts from its committed seeds (fuzz/seeds/) and the
# corpus earlier runs grew (fuzz/corpus/, not committed); a crash stops with the input saved in
# fuzz/artifacts/, to become a regression test.
fuzz() {
    ensure_cargo_tool cargo-fuzz cargo-fuzz
    local seconds=${FUZZ_SECONDS:-60}
    for target in $(cd fuzz && cargo +nightly fuzz list); do
        log "fuzzing $target for ${seconds} s"
        mkdir -p "fuzz/corpus/$target"
        (cd fuzz && cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
            -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1)
    done
}

case "${1:-serve}" in
    serve) setup; build_wasm; serve ;;
    test) setup; run_tests ;;
    wasm) setup; build_wasm ;;
    package) setup; build_wasm; build_package ;;
    setup) setup ;;
    bench) setup; bench ;;
    fuzz) setup; fuzz ;;
    torch) ensure_torch_env ;;
    *) echo "usage: $0 [serve|test|wasm|package|setup|bench|fuzz|torch]" >&2; exit 2 ;;
esac
