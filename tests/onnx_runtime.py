"""Runs an ONNX model with onnxruntime (an independent runtime) for tests/onnx.rs.

    python tests/onnx_runtime.py MODEL.onnx FACES.u8 OUT.f32

FACES.u8 holds 48x48 grey faces (one byte per pixel, faces end to end); OUT.f32 receives the
graph's `probabilities` for them, float32 little-endian, [n, 7] row-major. The script checks
the graph's interface (one input `pixels` [N, 1, 48, 48] with a symbolic batch, one output
`probabilities` [N, 7]) and that a batch of one gives the same answer as the whole batch.
Needs the virtualenv ./build.sh setup makes (.venv-onnx).
"""

import sys

import numpy as np
import onnxruntime as ort


def main(model_path, faces_path, out_path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    (pixels,) = session.get_inputs()
    (probabilities,) = session.get_outputs()
    assert pixels.name == "pixels" and pixels.type == "tensor(float)", (pixels.name, pixels.type)
    assert isinstance(pixels.shape[0], str) and pixels.shape[1:] == [1, 48, 48], pixels.shape
    assert probabilities.name == "probabilities" and probabilities.shape[1:] == [7], (probabilities.name, probabilities.shape)

    faces = np.fromfile(faces_path, dtype=np.uint8).reshape(-1, 1, 48, 48).astype(np.float32)
    (result,) = session.run(["probabilities"], {"pixels": faces})
    assert result.shape == (len(faces), 7) and result.dtype == np.float32, (result.shape, result.dtype)
    (first,) = session.run(["probabilities"], {"pixels": faces[:1]})
    assert np.abs(first - result[:1]).max() < 1e-6, "a batch of one differs from the same face in a larger batch"
    result.astype("<f4").tofile(out_path)
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
