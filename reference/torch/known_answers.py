"""Known answers for the Rust engine, computed by PyTorch: tests/known_answers.rs (natively) and
tests/web.rs (in Firefox) must reproduce them within stated tolerances.

    .venv-torch/bin/python reference/torch/known_answers.py    # writes tests/fixtures/known_answers/

For two networks, `seed` (the paper's CNN) and a small batch-norm net, from fixed weights and a
fixed batch of 6 faces, one file each (`{net}.safetensors`) holding:
- `pixels` (uint8 [6, 1, 48, 48]) and `labels` (uint8 [6]): the batch;
- `initial.{name}`: every tensor of the model file (parameters and batch-norm statistics);
- `logits`: the training-mode forward pass (batch-norm on batch statistics), `logits_eval`: the
  evaluation-mode one (running statistics);
- `loss`: softmax cross-entropy against labels smoothed by `label_smoothing` (metadata);
- `grad.{name}`: every parameter's gradient of that loss;
- for each optimiser in the metadata's `optimizers` (SGD with Nesterov momentum and L2 weight
  decay, Adam with L2 weight decay, AdamW with decoupled weight decay, all as PyTorch defines
  them): `{optimizer}.losses` (the loss before each of 3 steps on the same batch),
  `{optimizer}.{name}`: every tensor after the 3 steps (batch-norm running statistics after 3
  training-mode passes included) and `{optimizer}.logits_eval`.
Plus `presets.json`: the presets as fer_torch.py spells them, which the Rust test compares with
src/models/presets.rs; and model files written by fer_torch.save_model, which the engine must
load as its own: `{net}_sgd_int8.safetensors` (after the SGD steps, 8-bit weights) and
`{net}_adamw_f32.safetensors` (after the AdamW steps).

Everything is computed in float64 and stored as float32, so the answers carry no float32
rounding of their own. The batch is chosen (by bumping its seed) so that in no pass does a
gradient flow through a ReLU input within 1e-6 of zero, nor a max-pool window hold two values
within 1e-6 of its maximum: float32 rounding cannot flip a kink.
"""

import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import fer_torch
from fer_torch import FerNet, load_named_tensors, named_tensors, pixels_to_input, save_model

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "known_answers")

BATCH = 6
STEPS = 3
LABEL_SMOOTHING = 0.1
# Weight decay large enough that a formula that applies it wrongly moves the weights by far more
# than float32 rounding does.
OPTIMIZERS = [
    {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    {"name": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.01},
    {"name": "adamw", "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.1},
]

# A small net with every layer kind the engine has, besides dropout (random) and global average
# pooling: a strided 'same' conv, a max-pool whose window does not divide its input, a grouped
# conv with explicit padding, average pooling, batch-norm over channels and over features.
# Batch-norm follows the ReLU here: a bias right before batch-norm has a gradient of exactly zero
# in theory, and its float noise (1e-9) is what Adam divides by its own square root, giving a
# step of any size up to lr in any two implementations.
BATCH_NORM_NET = {
    "name": "batch_norm_net",
    "input": [1, 48, 48],
    "layers": [
        fer_torch.conv_spec(6, 3, stride=2),
        {"type": "relu"},
        {"type": "batch_norm"},
        {"type": "max_pool", "window": 3, "stride": 2},
        fer_torch.conv_spec(8, 3, padding={"explicit": 1}, groups=2),
        {"type": "relu"},
        {"type": "batch_norm"},
        {"type": "avg_pool", "window": 2, "stride": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 16},
        {"type": "relu"},
        {"type": "batch_norm"},
        {"type": "dense", "units": 7},
    ],
    "classes": 7,
}


def synthetic_faces(generator):
    """Face-like grey images: smooth blobs (a 6x6 pattern scaled up) plus pixel noise, as uint8."""
    coarse = torch.rand(BATCH, 1, 6, 6, generator=generator, dtype=torch.float64) * 200 + 20
    smooth = F.interpolate(coarse, size=(48, 48), mode="bilinear", align_corners=False)
    noise = torch.randn(BATCH, 1, 48, 48, generator=generator, dtype=torch.float64) * 12
    return (smooth + noise).round().clamp(0, 255).to(torch.uint8)


def initial_model(spec, generator):
    """PyTorch's default initialisation, drawn from `generator`; batch-norm's scale, shift and
    running statistics moved off 1 and 0 so that every one of them matters."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    model = FerNet(spec).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.8, 1.2, generator=generator)
                m.bias.normal_(0.0, 0.1, generator=generator)
                m.running_mean.normal_(0.0, 0.1, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
    return model


class KinkWatch:
    """Hooks recording how close any pass came to a kink where float32 rounding could change the
    answer: a ReLU input next to zero where a gradient flows through it (backward), or a max-pool
    window whose runner-up is next to its (positive) maximum (forward)."""

    def __init__(self, model):
        self.closest = float("inf")
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                m.register_forward_hook(self.keep_relu_input)
                m.register_full_backward_hook(self.relu_gradient)
            elif isinstance(m, nn.MaxPool2d):
                m.register_forward_hook(self.pool)

    def near(self, distance):
        self.closest = min(self.closest, float(distance))

    def keep_relu_input(self, module, inputs, output):
        module.kept_input = inputs[0].detach()

    def relu_gradient(self, module, grad_input, grad_output):
        flowing = grad_output[0] != 0
        if flowing.any():
            self.near(module.kept_input[flowing].abs().min())

    def pool(self, module, inputs, output):
        k, s = module.kernel_size, module.stride
        windows = inputs[0].detach().unfold(2, k, s).unfold(3, k, s).flatten(-2)  # [n, c, oh, ow, k*k]
        top2 = windows.topk(2, dim=-1).values
        positive = top2[..., 0] > 0
        if positive.any():
            self.near((top2[..., 0] - top2[..., 1])[positive].min())


def loss_of(logits, labels):
    return F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)


def make_optimizer(config, model):
    groups = model.parameter_groups(config["weight_decay"])  # decay on conv and dense weights only
    if config["name"] == "sgd":
        return torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"], nesterov=True)
    betas = (config["beta1"], config["beta2"])
    if config["name"] == "adam":
        return torch.optim.Adam(groups, lr=config["lr"], betas=betas, eps=config["epsilon"])
    return torch.optim.AdamW(groups, lr=config["lr"], betas=betas, eps=config["epsilon"])


def known_answers(spec, data_seed):
    """The fixture's tensors for `spec`, the closest any pass came to a kink, and the model each
    optimiser left. The float64 model starts from the float32 values stored, as the engine does."""
    generator = torch.Generator().manual_seed(data_seed)
    pixels = synthetic_faces(generator)
    labels = torch.randint(0, 7, (BATCH,), generator=generator)
    start = initial_model(spec, generator)
    x = pixels_to_input(pixels).double()
    out = {"pixels": pixels, "labels": labels.to(torch.uint8)}
    out.update({f"initial.{name}": t for name, t in named_tensors(start).items()})
    trained = {}  # optimiser name -> the model after its steps

    model = FerNet(spec).double()
    load_named_tensors(model, named_tensors(start))
    watch = KinkWatch(model)
    model.train()
    logits = model(x)
    loss = loss_of(logits, labels)
    loss.backward()
    out["logits"] = logits.detach()
    out["loss"] = loss.detach().reshape(1)
    for index, module in enumerate(model.layers):
        ours = fer_torch.BATCH_NORM_TO_OURS if isinstance(module, nn.modules.batchnorm._BatchNorm) else fer_torch.TORCH_TO_OURS
        for name, p in module.named_parameters():
            out[f"grad.layers.{index}.{ours[name]}"] = p.grad.detach()
    model.eval()
    out["logits_eval"] = model(x).detach()

    for config in OPTIMIZERS:
        model = FerNet(spec).double()
        load_named_tensors(model, named_tensors(start))
        step_watch = KinkWatch(model)
        optimizer = make_optimizer(config, model)
        losses = []
        for _ in range(STEPS):
            model.train()
            loss = loss_of(model(x), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        model.eval()
        out[f"{config['name']}.losses"] = torch.stack(losses)
        out[f"{config['name']}.logits_eval"] = model(x).detach()
        out.update({f"{config['name']}.{name}": t for name, t in named_tensors(model).items()})
        watch.near(step_watch.closest)
        trained[config["name"]] = model
    return out, watch.closest, trained


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for file_name, spec in [("seed", fer_torch.preset("seed")), ("batch_norm", BATCH_NORM_NET)]:
        data_seed = 0
        while True:
            tensors, closest, trained = known_answers(spec, data_seed)
            if closest > 1e-6:
                break
            data_seed += 1
        tensors = {name: (t.float() if t.is_floating_point() else t).contiguous() for name, t in tensors.items()}
        metadata = {
            "spec": json.dumps(spec, separators=(",", ":")),
            "label_smoothing": str(LABEL_SMOOTHING),
            "steps": str(STEPS),
            "optimizers": json.dumps(OPTIMIZERS),
            "generator": f"reference/torch/known_answers.py (PyTorch {torch.__version__}, float64), batch seed {data_seed}",
        }
        path = os.path.join(OUT, f"{file_name}.safetensors")
        save_file(tensors, path, metadata=metadata)
        print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes, batch seed {data_seed}, "
              f"closest to a kink {closest:.2e}, loss {float(tensors['loss']):.6f}")
        # Model files written by fer_torch.save_model, which the engine must load as its own:
        # `seed` after the SGD steps as int8 (the same integers and scales as `fer` writes), the
        # batch-norm net after the AdamW steps as f32 (its logits are `adamw.logits_eval`).
        for optimizer, precision in [("sgd", "int8"), ("adamw", "f32")]:
            model = FerNet(spec)
            load_named_tensors(model, named_tensors(trained[optimizer]))
            model_path = os.path.join(OUT, f"{file_name}_{optimizer}_{precision}.safetensors")
            save_model(model, model_path, precision, {"trained_with": "reference/torch/known_answers.py"})
            print(f"{model_path}: {os.path.getsize(model_path)} bytes")
    presets = {name: fer_torch.preset(name) for name in fer_torch.PRESETS}
    with open(os.path.join(OUT, "presets.json"), "w") as f:
        json.dump(presets, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
