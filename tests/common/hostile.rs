//! Model files made to break the loader: each with the words its error message must contain.
//! Every front end must refuse them with that message and go on (the CLI exits non-zero, the
//! page keeps its model); nothing may panic, trap or allocate what a file merely claims.

use fer_cnn::engine::Network;
use fer_cnn::models::{preset, save_model, StoredDtype};

/// A safetensors file written byte by byte: `header` as JSON after its length, then `data`.
pub fn raw_file(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let json = header.to_string().into_bytes();
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.extend(data);
    bytes
}

/// The header of a model file with `spec` and `tensors` (name, dtype, shape), laid end to end.
fn header(spec: &serde_json::Value, tensors: &[(&str, &str, &[usize])]) -> (serde_json::Value, usize) {
    let mut header = serde_json::json!({ "__metadata__": { "format": "fer-cnn/1", "spec": spec.to_string() } });
    let mut offset = 0;
    for (name, dtype, shape) in tensors {
        let size = if *dtype == "F32" || *dtype == "I32" {
            4
        } else if *dtype == "I8" || *dtype == "U8" {
            1
        } else {
            2
        };
        let bytes = size * shape.iter().product::<usize>();
        header[*name] = serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes] });
        offset += bytes;
    }
    (header, offset)
}

/// The smallest model that reads a face: its mean pixel, one weight per class, a bias.
fn tiny_spec() -> serde_json::Value {
    serde_json::json!({ "name": "tiny", "input": [1, 48, 48], "layers": [{ "type": "global_avg_pool" }, { "type": "dense", "units": 7 }], "classes": 7 })
}

fn tiny_with(tensors: &[(&str, &str, &[usize])], fill: u8) -> Vec<u8> {
    let (header, size) = header(&tiny_spec(), tensors);
    raw_file(&header, &vec![fill; size])
}

fn spec_only(spec: serde_json::Value) -> Vec<u8> {
    raw_file(&header(&spec, &[]).0, &[])
}

fn conv_spec(filters: u64, kernel: u64) -> serde_json::Value {
    serde_json::json!({ "name": "huge", "input": [1, 48, 48], "classes": 7, "layers": [
        { "type": "conv2d", "filters": filters, "kernel": kernel, "stride": 1, "padding": "same" },
        { "type": "global_avg_pool" }, { "type": "dense", "units": 7 } ] })
}

/// `(what it is, the file, words its error must contain)`.
pub fn hostile_files() -> Vec<(String, Vec<u8>, &'static str)> {
    let seed = save_model(&Network::new(preset("seed").expect("preset"), 1).expect("builds"), StoredDtype::F32, &Default::default())
        .expect("saves");
    let header_length = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) as usize;
    let lying = |length: u64| {
        let mut bytes = seed.clone();
        bytes[..8].copy_from_slice(&length.to_le_bytes());
        bytes
    };
    let good = [("layers.1.weight", "F32", &[7usize, 1][..]), ("layers.1.bias", "F32", &[7][..])];
    let gate = [
        ("personal.gate.centre", "F32", &[8usize][..]),
        ("personal.gate.scale", "F32", &[8][..]),
        ("personal.gate.weight", "F32", &[16][..]),
        ("personal.gate.bias", "F32", &[1][..]),
    ];
    let mut files = vec![
        ("empty file".to_string(), Vec::new(), "not a readable safetensors"),
        ("7 bytes".to_string(), seed[..7].to_vec(), "not a readable safetensors"),
        ("header length 2^63".into(), lying(1 << 63), "not a readable safetensors"),
        ("header length one past the file".into(), lying(seed.len() as u64 - 7), "not a readable safetensors"),
        ("header length 0".into(), lying(0), "not a readable safetensors"),
        ("header length one byte short".into(), lying(header_length as u64 - 1), "not a readable safetensors"),
        ("header that is not JSON".into(), [&9u64.to_le_bytes()[..], b"{not json"].concat(), "invalid JSON"),
        ("no format tag".into(), raw_file(&serde_json::json!({}), &[]), "not a model made by this project"),
        (
            "architecture that is not JSON".into(),
            raw_file(&serde_json::json!({ "__metadata__": { "format": "fer-cnn/1", "spec": "{not json" } }), &[]),
            "architecture in the file is invalid",
        ),
        ("a billion filters".into(), spec_only(conv_spec(1_000_000_000, 3)), "a layer may have at most"),
        ("a kernel of 2^16".into(), spec_only(conv_spec(8, 1 << 16)), "a layer may have at most"),
        (
            "a dense layer of 2^30 units".into(),
            spec_only(serde_json::json!({ "name": "huge", "input": [1, 48, 48], "classes": 7,
                "layers": [{ "type": "flatten" }, { "type": "dense", "units": 1u64 << 30 }, { "type": "dense", "units": 7 }] })),
            "a layer may have at most",
        ),
        (
            "an input of 2^31 x 2^31".into(),
            spec_only(serde_json::json!({ "name": "huge", "input": [1, 1u64 << 31, 1u64 << 31], "classes": 7, "layers": [] })),
            "48x48",
        ),
        (
            "a million layers".into(),
            spec_only(serde_json::json!({ "name": "deep", "input": [1, 48, 48], "classes": 7,
                "layers": vec![serde_json::json!({ "type": "relu" }); 1_000_000] })),
            "at most 1000",
        ),
        ("a weight stored as I32".into(), tiny_with(&[("layers.1.weight", "I32", &[7, 1]), good[1]], 0), "only F32, F16, BF16"),
        (
            "a tensor of the wrong shape".into(),
            tiny_with(&[("layers.1.weight", "F32", &[1, 7]), good[1]], 0),
            "has shape [1, 7] in the file",
        ),
        ("a missing tensor".into(), tiny_with(&good[..1], 0), "'layers.1.bias' is missing"),
        ("an extra tensor".into(), tiny_with(&[good[0], good[1], ("layers.9.weight", "F32", &[1])], 0), "does not use (layers.9.weight)"),
        ("NaN weights".into(), tiny_with(&good, 0xFF), "NaN or infinite"),
        ("an int8 weight without scales".into(), tiny_with(&[("layers.1.weight", "I8", &[7, 1]), good[1]], 1), "has no scales"),
        (
            "personal weights without their gate".into(),
            tiny_with(&[good[0], good[1], ("personal.layers.1.bias", "F32", &[7])], 0),
            "no gate tensor 'personal.gate.centre'",
        ),
        (
            "a personal tensor the architecture does not use".into(),
            tiny_with(&[good[0], good[1], ("personal.layers.9.weight", "F32", &[1])], 0),
            "does not use (personal.layers.9.weight)",
        ),
        (
            "a gate whose scales are zero".into(),
            tiny_with(&[good[0], good[1], ("personal.layers.1.bias", "F32", &[7]), gate[0], gate[1], gate[2], gate[3]], 0),
            "'personal.gate.scale' must be positive",
        ),
    ];
    for eighth in 1..8 {
        files.push((format!("truncated to {eighth}/8"), seed[..seed.len() * eighth / 8].to_vec(), "damaged, truncated"));
    }
    files
}
