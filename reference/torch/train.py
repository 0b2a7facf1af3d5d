"""Train one of our models in PyTorch, on a CPU, a GPU, or several GPUs (and machines) through
torchrun, and write a model file that `fer eval` and the page load.

    # one CPU or GPU
    python reference/torch/train.py --csv fer2013.csv.gz --preset seed --limit 6000 --epochs 30 \\
        --batch 32 --lr 1e-3 --seed 1 --out seed.safetensors
    # 8 GPUs of one machine (--batch is the global batch, split across the processes)
    torchrun --nproc_per_node 8 reference/torch/train.py --csv fer2013.csv.gz --preset deeper ...

It follows `fer train` (src/train/): the first --limit Training rows in file order, a fresh
shuffle each epoch, the same optimisers (weight decay on conv and dense weights only), the
learning-rate schedules step by step, label smoothing, the same augmentation (shift, rotation,
zoom, flip, then erasing), and at each epoch's end batch-norm statistics re-measured on 8,192
clean training faces ("precise batch-norm") before PublicTest is evaluated. Not here: mixup,
class weights, SAM, distillation, checkpoints. With several processes each takes an equal share
of every batch and DistributedDataParallel averages the gradients; on GPUs batch-norm is
synchronised across them (SyncBatchNorm), so a batch is normalised as one.
"""

import argparse
import json
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import fer_torch
from fer_torch import FerNet, accuracy, load_model, pixels_to_input, preset, read_fer2013, rows_of, save_model

RECALIBRATION_FACES = 8192  # src/train/batch_norm.rs
RECALIBRATION_BATCH = 256


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", required=True, help="FER2013 CSV (.csv or .csv.gz)")
    p.add_argument("--preset", default="seed", choices=fer_torch.PRESETS)
    p.add_argument("--init", help="start from this model file's weights (its architecture; --preset is ignored)")
    p.add_argument("--init-style", default="torch", choices=["torch", "he"],
                   help="fresh weights: PyTorch's defaults (as the Rust engine draws them), or He-normal convs / "
                        "LeCun-normal dense / zero biases (the Rust engine's initialisation before issue 26)")
    p.add_argument("--limit", type=int, help="train on the first N Training rows only (the paper used 6,000)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64, help="global batch size (all processes together)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw"])
    p.add_argument("--momentum", type=float, default=0.9, help="SGD's Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"])
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--augment", action="store_true", help="random shifts, rotations, zoom, flips and erasing")
    p.add_argument("--erase", type=float, default=0.5, help="with --augment: probability of erasing a rectangle")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--precision", default="f32", choices=["f32", "f16", "int8"], help="how the file stores weights")
    p.add_argument("--out", required=True, help="where to write the model (.safetensors)")
    p.add_argument("--save-init", help="also write the initial weights here, before training (for `fer train --init`)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# Augmentation, as src/data/input.rs: one random affine warp per face (output = rotate · scale ·
# flip (source − centre) + centre + shift), sampled bilinearly with the border extended, then
# with probability `erase` one rectangle of 2–15% of the face set to mid-grey (input 0).


def augment(pixels, erase_probability, generator):
    n, device = pixels.shape[0], pixels.device
    u = lambda *shape: torch.rand(*shape, generator=generator, device=device)  # noqa: E731
    centre = (fer_torch.FACE_SIDE - 1) / 2
    shift = (u(n, 2) * 2 - 1) * 4.0  # pixels, each axis
    angle = ((u(n) * 2 - 1) * 10.0).deg2rad()
    scale = 1 + (u(n) * 2 - 1) * 0.1
    flip = torch.where(u(n) < 0.5, -1.0, 1.0)
    cos, sin = angle.cos() / scale, angle.sin() / scale
    # Output pixel (x, y) reads the source at R⁻¹((x, y) − centre − shift) / scale + centre, with
    # x negated for a flip; in grid_sample's coordinates (align_corners: −1..1 is pixel 0..47).
    a = torch.stack([torch.stack([cos * flip, sin * flip], 1), torch.stack([-sin, cos], 1)], 1)  # [n, 2, 2]
    b = -(a @ (shift / centre).unsqueeze(2))  # [n, 2, 1]
    grid = F.affine_grid(torch.cat([a, b], 2), list(pixels.shape), align_corners=True)
    x = F.grid_sample(pixels.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    x = pixels_to_input(x)

    side = fer_torch.FACE_SIDE
    area = (0.02 + u(n) * 0.13) * side * side
    aspect = (0.3 + u(n) * 3.0).sqrt()
    h = (area * aspect).sqrt().floor().clamp(1, side)
    w = (area / aspect).sqrt().floor().clamp(1, side)
    top = (u(n) * (side - h + 1)).floor()
    left = (u(n) * (side - w + 1)).floor()
    ys = torch.arange(side, device=device).view(1, side, 1)
    xs = torch.arange(side, device=device).view(1, 1, side)
    inside = ((ys >= top.view(n, 1, 1)) & (ys < (top + h).view(n, 1, 1))
              & (xs >= left.view(n, 1, 1)) & (xs < (left + w).view(n, 1, 1)))
    erased = inside & (u(n) < erase_probability).view(n, 1, 1)
    return x.masked_fill(erased.unsqueeze(1), 0.0)


# ---------------------------------------------------------------------------------------------
# Learning rate per optimiser step (src/engine/optim.rs's LrSchedule): constant, or a linear
# warm-up from 0 then half a cosine down to 1% of the rate at the last step.


def lr_at(args, step, steps_per_epoch):
    if args.schedule == "constant":
        return args.lr
    warmup, total = args.warmup_epochs * steps_per_epoch, args.epochs * steps_per_epoch
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(args, model):
    groups = model.parameter_groups(args.weight_decay)
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=True)
    if args.optimizer == "adam":  # weight decay as L2 on the gradient
        return torch.optim.Adam(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)  # decoupled


def has_batch_norm(model):
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_batch_norm(model, pixels, rows, device):
    """Running statistics = the plain mean of the batch statistics over `rows` (src/train/
    batch_norm.rs): PyTorch's cumulative average (momentum None) from reset statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    batches = -(-len(rows) // RECALIBRATION_BATCH)
    for b in range(batches):
        chunk = rows[b * len(rows) // batches:(b + 1) * len(rows) // batches]
        model(pixels_to_input(pixels[chunk]).to(device))
    for m in norms:
        m.momentum = 0.1


def training_record(args):
    """The training options as the Rust `TrainConfig` serialises them (the `training` metadata)."""
    if args.optimizer == "sgd":
        optimizer = {"type": "sgd", "momentum": args.momentum, "nesterov": True}
    else:
        optimizer = {"type": args.optimizer, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
    schedule = {"type": "constant"} if args.schedule == "constant" else {"type": "cosine", "warmup_epochs": args.warmup_epochs}
    augment_record = None
    if args.augment:
        augment_record = {"max_shift": 4.0, "max_rotation_deg": 10.0, "max_scale": 0.1, "flip": True,
                          "erase_probability": args.erase}
    return {"epochs": args.epochs, "batch_size": args.batch, "lr": args.lr, "optimizer": optimizer,
            "weight_decay": args.weight_decay, "schedule": schedule, "label_smoothing": args.label_smoothing,
            "augment": augment_record, "mixup_alpha": 0.0, "class_weights": False, "seed": args.seed, "sam_rho": 0.0}


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)

    # torchrun sets these; a plain `python train.py` is one process.
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = args.device
    if world > 1:
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    say = print if rank == 0 else (lambda *a, **k: None)

    started = time.time()
    pixels, labels, usages = read_fer2013(args.csv)
    train_rows = rows_of(usages, "Training", args.limit)
    test_rows = rows_of(usages, "PublicTest")
    say(f"read {len(labels)} faces in {time.time() - started:.1f}s: {len(train_rows)} to train on, {len(test_rows)} PublicTest")
    pixels, labels = pixels.to(device), labels.to(device)

    # The same initial weights in every process (DDP also broadcasts rank 0's at the start).
    torch.manual_seed(args.seed)
    if args.init:
        model, _ = load_model(args.init)
    else:
        model = FerNet(preset(args.preset))
        if args.init_style == "he":
            fer_torch.init_he_(model)
    if args.save_init and rank == 0:
        save_model(model, args.save_init, "f32", {"init_style": args.init_style})
    model = model.to(device)
    net = model
    if world > 1:
        if device.startswith("cuda"):
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.startswith("cuda") else None)
    raw = net.module if world > 1 else net  # the FerNet (with SyncBatchNorm layers, on GPUs)
    optimizer = make_optimizer(args, model)
    parameters = sum(p.numel() for p in model.parameters())
    say(f"training '{model.spec['name']}' ({parameters} parameters) on {len(train_rows)} faces, {args.epochs} epochs, "
        f"{world} process(es) on {device}")

    steps_per_epoch = -(-len(train_rows) // args.batch)
    step = 0
    shuffle = torch.Generator().manual_seed(args.seed)
    augment_generator = torch.Generator(device=device).manual_seed(args.seed * 1000 + rank)
    for epoch in range(args.epochs):
        epoch_started = time.time()
        net.train()
        order = train_rows[torch.randperm(len(train_rows), generator=shuffle)]
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), args.batch):
            batch = order[start:start + args.batch]
            if len(batch) < world:
                continue  # a last batch too small to give every process a face
            mine = batch[rank::world].to(device)
            if args.augment:
                x = augment(pixels[mine], args.erase, augment_generator)
            else:
                x = pixels_to_input(pixels[mine])
            y = labels[mine]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(args, step, steps_per_epoch)
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(mine)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(mine)
        line = f"epoch {epoch + 1}: loss {loss_sum / seen:.4f}, train accuracy {100 * correct / seen:.2f}%"
        line += f", {seen * world / (time.time() - epoch_started):.0f} faces/s"
        if has_batch_norm(raw):
            pick = torch.Generator().manual_seed(args.seed * 7919 + epoch)
            chosen = train_rows[torch.randperm(len(train_rows), generator=pick)[:RECALIBRATION_FACES]]
            recalibrate_batch_norm(raw, pixels, chosen, device)
        if rank == 0:
            line += f", PublicTest accuracy {100 * accuracy(raw, pixels, labels, test_rows, device=device):.2f}%"
        say(line)

    if rank == 0:
        # The file, then the PublicTest accuracy of the weights as stored. An int8 file's rounded
        # weights shift every channel a little: its batch-norm statistics are measured again.
        metadata = {
            "training": json.dumps(training_record(args), separators=(",", ":")),
            "train_rows": len(train_rows),
            "epochs_completed": args.epochs,
            "trained_with": f"PyTorch {torch.__version__}, reference/torch/train.py, {world} process(es) on {device}",
        }
        final = fer_torch.FerNet(model.spec)
        fer_torch.load_named_tensors(final, fer_torch.named_tensors(raw))
        save_model(final, args.out, args.precision, metadata)
        stored, _ = load_model(args.out)
        stored = stored.to(device)
        if args.precision == "int8" and has_batch_norm(stored):
            pick = torch.Generator().manual_seed(args.seed * 7919 + args.epochs - 1)
            recalibrate_batch_norm(stored, pixels, train_rows[torch.randperm(len(train_rows), generator=pick)[:RECALIBRATION_FACES]], device)
            save_model(stored, args.out, args.precision, metadata)
            stored, _ = load_model(args.out)
            stored = stored.to(device)
        test_accuracy = accuracy(stored, pixels, labels, test_rows, device=device)
        metadata["publictest_accuracy"] = f"{test_accuracy:.4f}"
        save_model(stored, args.out, args.precision, metadata)
        say(f"final: train accuracy {100 * accuracy(stored, pixels, labels, train_rows, device=device):.2f}% (eval mode)")
        say(f"final: PublicTest accuracy {100 * test_accuracy:.2f}% (weights as stored)")
        say(f"saved {args.out} in {time.time() - started:.0f}s")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
