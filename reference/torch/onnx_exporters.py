"""A standard PyTorch CNN exported to ONNX by both of PyTorch 2.x's exporters, for
tests/onnx.rs: the importer must read both files and give PyTorch's answers.

    .venv-torch/bin/python reference/torch/onnx_exporters.py    # writes tests/fixtures/pytorch_onnx/

The net is what a PyTorch user writes, not one of ours: three Conv-BatchNorm-ReLU-MaxPool
blocks, AdaptiveAvgPool2d(1), Flatten, Linear(16, 7), with the input scaling this engine feeds
its first layer, (pixels - 128) / 64, at the start of `forward`. Fixed seed; the batch-norm
layers get random running statistics and affine parameters so that they matter (both exporters
fold them into the convolutions).

Written:
- `dynamo.onnx` + `dynamo.onnx.data`: `torch.onnx.export(net, (example,), path)` with every
  default (PyTorch 2.9+ uses the dynamo exporter): opset 20, the larger weights in the
  `.onnx.data` file beside the graph (ONNX external data), global average pooling as
  `ReduceMean` over axes [-1, -2] (the axes an input tensor), `Reshape` to [1, 16] (the example's
  batch of 1 is fixed in the graph).
- `legacy.onnx`: the same net by the TorchScript exporter (`dynamo=False`): GlobalAveragePool,
  Flatten, weights inside the file.
  Its nodes carry the exporter's metadata too (the PyTorch source lines, with this script's
  path), which the importer skips.
- `expected.json`: faces (uint8 [4, 2304], grey 0-255) and PyTorch's logits and softmax
  probabilities for them, computed in float64 from the same float32 weights.
"""

import json
import os

import onnx
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "pytorch_onnx")
FACES = 4


def block(channels_in, channels_out):
    return [nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU(), nn.MaxPool2d(2)]


class StandardNet(nn.Module):
    """48x48 -> 24 -> 12 -> 6, then the global average and the classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*block(1, 8), *block(8, 16), *block(16, 16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 7)

    def forward(self, pixels):
        x = (pixels - 128) / 64
        return self.fc(self.flatten(self.pool(self.features(x))))


def make_net():
    torch.manual_seed(2025)
    net = StandardNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def faces():
    """Smooth shading, an oval and noise, covering 0-255."""
    generator = torch.Generator().manual_seed(7)
    y, x = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    out = []
    for i in range(FACES):
        shading = 60 * torch.sin(0.07 * (i + 1) * x + 0.05 * y + i)
        oval = torch.where((x - 24) ** 2 / 200 + (y - 20 - i) ** 2 / 300 < 1, 40.0, -20.0)
        noise = 50 * (torch.rand(48, 48, generator=generator) - 0.5)
        out.append((128 + shading + oval + noise).clamp(0, 255).round())
    return torch.stack(out).to(torch.uint8).reshape(FACES, 1, 48, 48)


def main():
    os.makedirs(OUT, exist_ok=True)
    net = make_net()
    example = torch.full((1, 1, 48, 48), 128.0)
    dynamo_path = os.path.join(OUT, "dynamo.onnx")
    for stale in (dynamo_path, dynamo_path + ".data"):
        if os.path.exists(stale):
            os.remove(stale)
    torch.onnx.export(net, (example,), dynamo_path)
    torch.onnx.export(net, (example,), os.path.join(OUT, "legacy.onnx"), dynamo=False)
    graph = onnx.load(dynamo_path, load_external_data=False)
    external = [t.name for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external, "the dynamo exporter kept every weight inside the graph"
    assert any(n.op_type == "ReduceMean" for n in graph.graph.node), "no ReduceMean in the dynamo graph"

    pixels = faces()
    with torch.no_grad():
        logits = net.double()(pixels.double())
    probabilities = torch.softmax(logits, dim=1)
    expected = {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "faces": pixels.reshape(FACES, -1).tolist(),
        "logits": logits.tolist(),
        "probabilities": probabilities.tolist(),
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")
    print(f"external tensors in dynamo.onnx: {', '.join(external)}")


if __name__ == "__main__":
    main()
