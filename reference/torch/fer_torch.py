"""Our models in PyTorch: a network built from the architecture a model file stores (its `spec`
metadata, the JSON of the Rust `ModelSpec`), and our safetensors files read and written with the
same tensor names, layouts and metadata, so a model trained here loads in `fer eval` and the page.

The semantics follow src/engine/ exactly:
- input: a grey pixel p (0-255) becomes (p - 128) / 64 (src/data/input.rs);
- conv2d "same" padding as TensorFlow: output ceil(in / stride), and when the padding is odd the
  extra row/column goes at the bottom/right (the paper's 4x4 and 2x2 kernels need it);
- pooling without padding, output (in - window) // stride + 1 (a window that does not divide the
  input drops the last rows and columns), which is PyTorch's default (ceil_mode=False);
- batch-norm: eps 1e-5, momentum 0.1, running variance unbiased (PyTorch's defaults); over the
  channels of [n, c, h, w] or the features of [n, f];
- flatten in NCHW order; inverted dropout;
- weight decay only on conv and dense weights (not biases, not batch-norm's gamma and beta).
"""

import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "fer-cnn/1"  # src/models/file.rs: files without it are refused
NUM_CLASSES = 7
FACE_SIDE = 48
EMOTIONS = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


def pixels_to_input(pixels):
    """uint8 faces [n, 1, 48, 48] (or any shape) -> float inputs, as src/data/input.rs does."""
    return (pixels.float() - 128.0) / 64.0


# ---------------------------------------------------------------------------------------------
# The presets (src/models/presets.rs), as the JSON specs the Rust code writes into model files.
# tests/known_answers.rs checks that these equal the Rust presets.


def conv_spec(filters, kernel, stride=1, padding="same", groups=1):
    spec = {"type": "conv2d", "filters": filters, "kernel": kernel, "stride": stride, "padding": padding}
    if groups != 1:
        spec["groups"] = groups  # left out of files when 1, as serde does
    return spec


def vgg_spec(name, blocks):
    layers = []
    for block in blocks:
        for filters in block:
            layers += [conv_spec(filters, 3), {"type": "batch_norm"}, {"type": "relu"}]
        layers.append({"type": "max_pool", "window": 2, "stride": 2})
    layers += [{"type": "flatten"}, {"type": "dropout", "rate": 0.4}, {"type": "dense", "units": NUM_CLASSES}]
    return {"name": name, "input": [1, FACE_SIDE, FACE_SIDE], "layers": layers, "classes": NUM_CLASSES}


def preset(name):
    if name == "seed":
        layers = [
            conv_spec(8, 4), {"type": "relu"}, {"type": "max_pool", "window": 8, "stride": 8},
            conv_spec(16, 2), {"type": "relu"}, {"type": "max_pool", "window": 3, "stride": 3},
            {"type": "flatten"}, {"type": "dense", "units": 64}, {"type": "relu"}, {"type": "dense", "units": NUM_CLASSES},
        ]
        return {"name": name, "input": [1, FACE_SIDE, FACE_SIDE], "layers": layers, "classes": NUM_CLASSES}
    if name == "mlp":
        layers = [{"type": "flatten"}, {"type": "dense", "units": 256}, {"type": "relu"}, {"type": "dense", "units": NUM_CLASSES}]
        return {"name": name, "input": [1, FACE_SIDE, FACE_SIDE], "layers": layers, "classes": NUM_CLASSES}
    if name == "deep":
        return vgg_spec(name, [[32, 32], [64, 64], [128, 128], [256]])
    if name == "fast":
        return vgg_spec(name, [[16], [32, 32], [64, 64], [128, 112]])
    if name == "deeper":
        return vgg_spec(name, [[32, 32], [64, 64], [128, 128, 128], [256, 256]])
    raise ValueError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")


PRESETS = ["seed", "mlp", "deep", "fast", "deeper"]


# ---------------------------------------------------------------------------------------------
# Layers that need more than a stock torch module.


def same_padding(size, kernel, stride):
    """TensorFlow's 'same': (before, after) padding along one axis, the odd one after."""
    out = -(-size // stride)  # ceil
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2d(nn.Conv2d):
    """nn.Conv2d with our padding: explicit zeros on each side, applied before the convolution
    so that 'same' can pad the bottom/right one more than the top/left."""

    def __init__(self, in_channels, spec, in_h, in_w):
        k, stride, groups = spec["kernel"], spec["stride"], spec.get("groups", 1)
        super().__init__(in_channels, spec["filters"], k, stride=stride, padding=0, groups=groups)
        padding = spec["padding"]
        if padding == "valid":
            self.pads = (0, 0, 0, 0)
        elif padding == "same":
            top, bottom = same_padding(in_h, k, stride)
            left, right = same_padding(in_w, k, stride)
            self.pads = (left, right, top, bottom)  # F.pad's order: last axis first
        else:
            p = padding["explicit"]
            self.pads = (p, p, p, p)
        padded_h, padded_w = in_h + self.pads[2] + self.pads[3], in_w + self.pads[0] + self.pads[1]
        self.out_shape = [spec["filters"], (padded_h - k) // stride + 1, (padded_w - k) // stride + 1]

    def forward(self, x):
        if any(self.pads):
            x = F.pad(x, self.pads)
        return super().forward(x)


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------
# The network: one module per spec layer, at the same index, so `layers.{i}.weight` is both our
# tensor name and the torch state_dict key.


class FerNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        shape = list(spec["input"])  # per-sample shape: [c, h, w], or [features] once flat
        layers = []
        for layer in spec["layers"]:
            kind = layer["type"]
            if kind == "conv2d":
                module = Conv2d(shape[0], layer, shape[1], shape[2])
                shape = module.out_shape
            elif kind in ("max_pool", "avg_pool"):
                window, stride = layer["window"], layer["stride"]
                pool = nn.MaxPool2d if kind == "max_pool" else nn.AvgPool2d
                module = pool(window, stride)
                shape = [shape[0], (shape[1] - window) // stride + 1, (shape[2] - window) // stride + 1]
            elif kind == "global_avg_pool":
                module, shape = GlobalAvgPool(), [shape[0]]
            elif kind == "dense":
                module = nn.Linear(shape[0], layer["units"])
                shape = [layer["units"]]
            elif kind == "batch_norm":
                # eps 1e-5 and momentum 0.1, as src/engine/layers/batchnorm.rs.
                module = nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])
            elif kind == "relu":
                module = nn.ReLU()
            elif kind == "flatten":
                module, shape = nn.Flatten(), [math.prod(shape)]
            elif kind == "dropout":
                module = nn.Dropout(layer["rate"])
            else:
                raise ValueError(f"layer type '{kind}' is not known here")
            layers.append(module)
        if shape != [spec["classes"]]:
            raise ValueError(f"the last layer outputs {shape}, the model needs [{spec['classes']}]")
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)

    def parameter_groups(self, weight_decay):
        """Optimiser parameter groups: conv and dense weights decay, the rest do not (our
        `Param::decay`)."""
        decay, no_decay = [], []
        for module in self.layers:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                decay.append(module.weight)
                no_decay.append(module.bias)
            else:
                no_decay += list(module.parameters(recurse=False))
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def init_he_(model, generator=None):
    """The Rust engine's initialisation before issue 26 (conv.rs, dense.rs): conv weights
    He-normal (std sqrt(2 / fan_in)), dense weights LeCun-normal (std sqrt(1 / fan_in)), biases
    zero. The engine now draws as PyTorch does by default (kaiming_uniform with a = sqrt(5)):
    weights and biases U(+-1 / sqrt(fan_in)), a variance of 1 / (3 fan_in), a sixth of He's.
    Kept for the comparison in docs/reference.md."""
    with torch.no_grad():
        for module in model.layers:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                gain = 2.0 if isinstance(module, nn.Conv2d) else 1.0
                module.weight.normal_(0.0, math.sqrt(gain / fan_in), generator=generator)
                module.bias.zero_()


# ---------------------------------------------------------------------------------------------
# Model files: safetensors, tensors `layers.{i}.{weight,bias}` for conv and dense (torch's
# layouts: [out, in/groups, k, k] and [out, in]), `layers.{i}.{gamma,beta,running_mean,
# running_var}` for batch-norm; metadata `format`, `spec` (JSON) and the training record.

TORCH_TO_OURS = {"weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var"}
BATCH_NORM_TO_OURS = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}


def named_tensors(model):
    """Our name -> float32 tensor, for every tensor a model file holds."""
    tensors = {}
    for index, module in enumerate(model.layers):
        names = BATCH_NORM_TO_OURS if isinstance(module, nn.modules.batchnorm._BatchNorm) else TORCH_TO_OURS
        for torch_name, tensor in module.state_dict().items():
            if torch_name in names:  # not num_batches_tracked
                tensors[f"layers.{index}.{names[torch_name]}"] = tensor.detach().float().cpu()
    return tensors


def load_named_tensors(model, tensors):
    """Copies our-named tensors into the model; every tensor the model has must be given."""
    with torch.no_grad():
        for index, module in enumerate(model.layers):
            names = BATCH_NORM_TO_OURS if isinstance(module, nn.modules.batchnorm._BatchNorm) else TORCH_TO_OURS
            for torch_name, target in module.state_dict(keep_vars=True).items():
                if torch_name in names:
                    value = tensors[f"layers.{index}.{names[torch_name]}"]
                    if tuple(value.shape) != tuple(target.shape):
                        raise ValueError(f"layers.{index}.{names[torch_name]}: shape {tuple(value.shape)}, needs {tuple(target.shape)}")
                    target.copy_(value)


def quantise_rows(tensor):
    """Per output channel (row of axis 0): q = round(w / scale), scale = max|w| / 127, rounding
    half away from zero like Rust's f32::round (src/engine/int8.rs)."""
    rows = tensor.reshape(tensor.shape[0], -1)
    scale = rows.abs().amax(dim=1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    ratio = rows / safe[:, None]
    q = (torch.sign(ratio) * torch.floor(ratio.abs() + 0.5)).clamp(-127, 127)
    q = torch.where(scale[:, None] > 0, q, torch.zeros_like(q))
    return q.to(torch.int8).reshape(tensor.shape), scale


def save_model(model, path, precision="f32", metadata=None):
    """Writes `model` as our model file: weights as f32, f16, or int8 (conv and dense weights as
    8-bit integers with one f32 scale per output channel in `{name}.scale`, the rest f16)."""
    out = {}
    for name, tensor in named_tensors(model).items():
        if precision == "f32":
            out[name] = tensor.contiguous()
        elif precision == "int8" and tensor.dim() >= 2:
            q, scale = quantise_rows(tensor)
            out[name] = q.contiguous()
            out[f"{name}.scale"] = scale.float().contiguous()
        elif precision in ("f16", "int8"):
            out[name] = tensor.half().contiguous()
        else:
            raise ValueError(f"unknown weight precision '{precision}': use f32, f16 or int8")
    header = {key: str(value) for key, value in (metadata or {}).items()}
    header["format"] = FORMAT
    header["spec"] = json.dumps(model.spec, separators=(",", ":"))
    save_file(out, path, metadata=header)


def load_model(path):
    """A model file -> (FerNet with its weights, the rest of its metadata)."""
    with safe_open(path, framework="pt") as f:
        metadata = dict(f.metadata() or {})
        if metadata.pop("format", None) != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} model file")
        spec = json.loads(metadata.pop("spec"))
        raw = {name: f.get_tensor(name) for name in f.keys()}
    tensors = {}
    for name, tensor in raw.items():
        if name.endswith(".scale") or name.startswith("optimizer."):
            continue
        if tensor.dtype == torch.int8:
            scale = raw[f"{name}.scale"].float()
            tensor = tensor.float() * scale.reshape(-1, *([1] * (tensor.dim() - 1)))
        tensors[name] = tensor.float()
    model = FerNet(spec)
    load_named_tensors(model, tensors)
    return model, metadata


# ---------------------------------------------------------------------------------------------
# FER2013: `emotion,pixels,Usage` rows (.csv or .csv.gz), in file order.


def read_fer2013(path):
    """-> (pixels uint8 [n, 1, 48, 48], labels int64 [n], usages list of str), in file order."""
    import csv
    import gzip

    import numpy as np

    opener = gzip.open if str(path).endswith(".gz") else open
    pixels, labels, usages = [], [], []
    with opener(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            face = np.array(row["pixels"].split(), dtype=np.uint8)
            if face.size != FACE_SIDE * FACE_SIDE:
                continue  # a bad row: the Rust reader reports it, here it is only skipped
            pixels.append(face)
            labels.append(int(row["emotion"]))
            usages.append(row["Usage"])
    pixels = torch.from_numpy(np.stack(pixels)).reshape(-1, 1, FACE_SIDE, FACE_SIDE)
    return pixels, torch.tensor(labels), usages


def rows_of(usages, usage, limit=None):
    """Indices of the rows of one usage, in file order; the first `limit` of them if given."""
    rows = [i for i, u in enumerate(usages) if u == usage]
    return torch.tensor(rows[:limit] if limit is not None else rows, dtype=torch.long)


@torch.no_grad()
def accuracy(model, pixels, labels, rows, batch=512, device="cpu"):
    """Top-1 accuracy of `model` in evaluation mode on `rows`."""
    model.eval()
    correct = 0
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        logits = model(pixels_to_input(pixels[chunk]).to(device))
        correct += (logits.argmax(dim=1).cpu() == labels[chunk]).sum().item()
    return correct / max(len(rows), 1)
