"""Training throughput of kubenas' child trainer vs a plain hand-written PyTorch loop.

Both train the same network (same initial weights) on the same in-memory data for the same
epochs, with the same per-epoch validation pass, and are timed from the outside (wall clock
around the whole call). The reference loop is what one would write by hand: shuffle, slice
batches, (optionally) pad-and-crop + flip each image with a Python loop, forward, loss,
backward, SGD step, then evaluate. Runs alternate (ref, trainer, ref, trainer, ...) and the
median of each is reported, which keeps a busy shared machine from favouring either side.

    .venv/bin/python benchmarks/trainer_throughput.py                  # Fashion-MNIST subset
    .venv/bin/python benchmarks/trainer_throughput.py --augment        # with crop + flip
    .venv/bin/python benchmarks/trainer_throughput.py --dataset digits --train 1350

Target: trainer >= 0.95x the plain loop's images/s.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from kubenas.contracts import Architecture
from kubenas.trainer.builders.cnn import build_cnn
from kubenas.trainer.config import TrainerConfig
from kubenas.trainer.data import load_dataset
from kubenas.trainer.data.augment import BatchAugment
from kubenas.trainer.data.base import ImageSplit
from kubenas.trainer.train import batch_starts, fit, resolve_device

# A §3.4-style network: 6 conv layers, mixed filter shapes, skip connections.
ARCH = Architecture.from_dict({"space": "cnn", "spec": {"layers": [
    {"name": "l1", "inputs": [], "filter_height": 3, "filter_width": 3, "num_filters": 24},
    {"name": "l2", "inputs": ["l1"], "filter_height": 3, "filter_width": 5, "num_filters": 36},
    {"name": "l3", "inputs": ["l2"], "filter_height": 5, "filter_width": 3, "num_filters": 36,
     "stride_height": 2, "stride_width": 2},
    {"name": "l4", "inputs": ["l1", "l3"], "filter_height": 3, "filter_width": 3,
     "num_filters": 48},
    {"name": "l5", "inputs": ["l4"], "filter_height": 1, "filter_width": 7, "num_filters": 36},
    {"name": "l6", "inputs": ["l4", "l5"], "filter_height": 3, "filter_width": 3,
     "num_filters": 48},
]}})


def plain_loop(model, train: ImageSplit, val: ImageSplit, epochs: int, batch_size: int,
               lr: float, pad: int, flip: bool, device, seed: int) -> None:
    """The hand-written reference: nothing but what training needs."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    xs, ys = train.images.to(device), train.labels.to(device)
    vx, vy = val.images.to(device), val.labels.to(device)
    g = torch.Generator().manual_seed(seed)
    n, (h, w) = len(ys), xs.shape[2:]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g).to(device)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            if len(idx) < 2:
                continue
            x = xs[idx]
            if pad:
                xp = F.pad(x, [pad] * 4)
                dy = torch.randint(0, 2 * pad + 1, (len(idx),), generator=g).tolist()
                dx = torch.randint(0, 2 * pad + 1, (len(idx),), generator=g).tolist()
                x = torch.stack([xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
                                 for i in range(len(idx))])
            if flip:
                m = (torch.rand(len(idx), generator=g) < 0.5).to(device)
                x = torch.where(m[:, None, None, None], x.flip(3), x)
            x = x.float() / 255
            loss = F.cross_entropy(model(x), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for s in range(0, len(vy), 512):
                correct += (model(vx[s:s + 512].float() / 255).argmax(1) == vy[s:s + 512]).sum().item()
        _ = correct / len(vy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "digits", "cifar10"])
    ap.add_argument("--path", default=None, help="dataset folder (cifar10 needs one)")
    ap.add_argument("--train", type=int, default=4000, help="training images used")
    ap.add_argument("--val", type=int, default=500, help="validation images used")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--augment", action="store_true", help="padded random crop (+ flip)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    train, val, info = load_dataset(args.dataset, args.path, validation_size=args.val, seed=0)
    train = ImageSplit(train.images[:args.train].clone(), train.labels[:args.train].clone())
    pad = info.crop_padding if args.augment else 0
    flip = info.horizontal_flip if args.augment else False
    torch.manual_seed(0)
    base = build_cnn(ARCH, info.input_shape, info.num_classes, info.mean, info.std)
    common = {"epochs": args.epochs, "batchSize": args.batch_size, "lrSchedule": "constant",
              "learningRate": 0.05, "evalBatchSize": 512}
    cfg = TrainerConfig.from_dict(common)  # the trainer as it runs children (NHWC)
    cfg_nchw = TrainerConfig.from_dict(dict(common, channelsLast=False))  # the same loop, NCHW
    steps = len(batch_starts(len(train), args.batch_size))
    images = args.epochs * len(train)
    print(f"{args.dataset}: {len(train)} train / {len(val)} val {info.input_shape}, "
          f"{sum(p.numel() for p in base.parameters()):,} params, {args.epochs} epochs x "
          f"{steps} steps of {args.batch_size}, augment={'crop %d + flip %s' % (pad, flip) if args.augment else 'off'}, "
          f"device {device}, {torch.get_num_threads()} threads")

    def timed(fn) -> tuple[float, float]:
        """(wall seconds, this process's CPU seconds) of fn()."""
        model = copy.deepcopy(base).to(device)
        w, c = time.perf_counter(), time.process_time()
        fn(model)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - w, time.process_time() - c

    def run_plain(model) -> None:
        plain_loop(model, train, val, args.epochs, args.batch_size, 0.05, pad, flip, device, 0)

    def run_trainer(model) -> None:
        fit(model, train, val, cfg, augment=BatchAugment(pad, flip), device=device)

    def run_trainer_nchw(model) -> None:
        fit(model, train, val, cfg_nchw, augment=BatchAugment(pad, flip), device=device)

    runs = {"plain PyTorch loop": run_plain, "kubenas trainer": run_trainer,
            "kubenas trainer, channelsLast off": run_trainer_nchw}
    for fn in runs.values():  # warm-up (allocator, kernels)
        timed(fn)
    times: dict[str, list] = {k: [] for k in runs}
    for r in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
        print(f"  repeat {r + 1}: " + "   ".join(
            f"{name} {images / t[-1][0]:.1f} img/s ({images / t[-1][1]:.1f}/CPU-s)"
            for name, t in times.items()))
    for k, what in ((0, "wall clock"), (1, "CPU time of this process (steadier on a shared machine)")):
        rate = {name: images / statistics.median(t[k] for t in ts) for name, ts in times.items()}
        ref = rate["plain PyTorch loop"]
        print(f"{what}, median of {args.repeats}:")
        for name, v in rate.items():
            print(f"  {name:34s}: {v:9.1f} images/s   ratio to plain {v / ref:.3f}")
    print("target: kubenas trainer >= 0.95 x plain")


if __name__ == "__main__":
    main()
