"""GPU check (issue 12, section 4): what noisysam's paper profile does on one CUDA card, in under 10 minutes.

On the paper profile's ResNet-32 (He et al., arXiv 1512.03385) and the embedded CIFAR-10 data, batch 128,
on-device loader with crop + flip, channels_last, it measures and prints:

1. training throughput (images/s) and peak GPU memory of SGD and SAM (Foret et al., arXiv 2010.01412) steps
   in fp32, bf16 autocast and fp16 autocast + GradScaler, and the SAM/SGD step-time ratio (2 passes: ~2);
2. whether fp16 + GradScaler SAM steps stay close to fp32 ones: along one fp32 trajectory, each step's update
   is recomputed from the same weights and batch in fp16 (and bf16) and compared with the fp32 update
   (cosine similarity and relative error of the whole update vector);
3. how many cells (independent training processes, as ``noisysam table --jobs/--cells-per-gpu`` runs them) fit
   on the card at full speed: k processes train at once; "full speed" = each keeps >= 90% of a lone one's
   images/s.

Usage: ``python scripts/gpu_check.py [--steps 50] [--cells 1,2,4,8] [--compile]``; ``--device cpu --quick``
is a smoke run of the same code on a CPU (figures meaningless there).
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing as mp
import time
from typing import Optional

import torch
import torch.nn.functional as F

from noisysam.data.loader import Loader
from noisysam.data.datasets import load_dataset
from noisysam.models.networks import get_model
from noisysam.methods.registry import get_method

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--cells", default="1,2,4,8", help="process counts tried for cells per GPU")
    p.add_argument("--compare-steps", type=int, default=20, help="steps compared in fp16/bf16 vs fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (first steps compile)")
    p.add_argument("--quick", action="store_true", help="smoke mode: 3 steps, batch 16, cells 1,2")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.cells, args.compare_steps = 3, 16, "1,2", 2
    args.cells = [int(c) for c in args.cells.split(",")]
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainee:
    """ResNet-32 with the ``sgd`` or ``sam`` method (SGD momentum 0.9, wd 5e-4, lr 0.1, SAM rho 0.1: the paper profile)."""

    def __init__(self, method: str, precision: str, device: torch.device, batch_size: int, compile: bool = False,
                 seed: int = 0):
        data = load_dataset("cifar10-mini")
        torch.manual_seed(seed)
        self.model = get_model("resnet32").to(device).to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compile else self.model
        # The trainer's own method objects, so the check times the step noisysam runs.
        self.method = get_method("sam", rho=0.1) if method == "sam" else get_method("sgd")
        self.optimizer = self.method.make_optimizer(self.model.named_parameters(), lr=0.1, momentum=0.9,
                                                    weight_decay=5e-4)
        self.dtype, self.device = PRECISIONS[precision], device
        self.generator = torch.Generator().manual_seed(seed)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.loader = Loader(data.x_train, data.y_train, batch_size=batch_size, augment=True, device=device,
                             channels_last=True, seed=seed, drop_last=True)
        self._batches = iter(())

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            x, y, _ = next(self._batches)
        except StopIteration:
            self.loader.set_epoch(self.loader.epoch + 1)
            self._batches = iter(self.loader)
            x, y, _ = next(self._batches)
        return x, y

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One training step through the method's ``train_step``, as the trainer takes it (no host sync)."""
        self.model.train()
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            self.method.train_step(self.forward, self.optimizer, x, y, None, generator=self.generator,
                                   scaler=self.scaler)

    def images_per_second(self, steps: int, warmup: int = 5) -> float:
        batches = [self.batch() for _ in range(steps + warmup)]
        for x, y in batches[:warmup]:
            self.step(x, y)
        sync(self.device)
        t0 = time.perf_counter()
        for x, y in batches[warmup:]:
            self.step(x, y)
        sync(self.device)
        return steps * batches[0][0].shape[0] / (time.perf_counter() - t0)


def throughput(args: argparse.Namespace, device: torch.device) -> dict[tuple[str, str], float]:
    print(f"\n1. Throughput, ResNet-32, batch {args.batch_size}, {args.steps} timed steps"
          + (", torch.compile" if args.compile else ""))
    print(f"{'precision':<10}{'method':<8}{'images/s':>10}{'peak MiB':>10}")
    speed = {}
    for precision in PRECISIONS:
        for method in ("sgd", "sam"):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            trainee = Trainee(method, precision, device, args.batch_size, args.compile)
            speed[precision, method] = trainee.images_per_second(args.steps)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan
            print(f"{precision:<10}{method:<8}{speed[precision, method]:>10.0f}{peak:>10.0f}")
        print(f"{'':<10}SAM/SGD step-time ratio: {speed[precision, 'sgd'] / speed[precision, 'sam']:.2f}")
    return speed


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in model.parameters()])


def agreement(args: argparse.Namespace, device: torch.device) -> None:
    """Per step, the update from the same weights, momentum and batch in fp16+GradScaler / bf16 vs fp32."""
    print(f"\n2. SAM updates in low precision vs fp32, {args.compare_steps} steps along the fp32 trajectory")
    reference = Trainee("sam", "fp32", device, args.batch_size)
    others = {p: Trainee("sam", p, device, args.batch_size) for p in ("fp16", "bf16")}
    cosines: dict[str, list[float]] = {p: [] for p in others}
    errors: dict[str, list[float]] = {p: [] for p in others}
    skipped = {p: 0 for p in others}
    for _ in range(args.compare_steps):
        x, y = reference.batch()
        weights = copy.deepcopy(reference.model.state_dict())
        momentum = copy.deepcopy(reference.optimizer.state_dict())
        w0 = _flat(reference.model)
        reference.step(x, y)
        ref_update = _flat(reference.model) - w0
        for precision, trainee in others.items():
            trainee.model.load_state_dict(weights)
            trainee.optimizer.load_state_dict(copy.deepcopy(momentum))
            trainee.step(x, y)
            update = _flat(trainee.model) - w0
            if not bool(update.abs().sum() > 0):  # GradScaler skipped the step (overflow): no update to compare
                skipped[precision] += 1
                continue
            cosines[precision].append(float(F.cosine_similarity(update, ref_update, dim=0)))
            errors[precision].append(float((update - ref_update).norm() / ref_update.norm()))
    for precision in others:
        cos, rel = cosines[precision], errors[precision]
        if not cos:
            print(f"{precision}: every step skipped by the scaler")
            continue
        ok = min(cos) > 0.99 and max(rel) < 0.1
        print(f"{precision}: cosine to the fp32 update min {min(cos):.4f} mean {sum(cos) / len(cos):.4f}; relative "
              f"error max {max(rel):.3f} mean {sum(rel) / len(rel):.3f}; steps skipped {skipped[precision]}"
              f"  -> {'close' if ok else 'NOT close'} (criterion: cosine > 0.99, relative error < 0.1)")


def _cell_worker(method: str, precision: str, device: str, batch_size: int, steps: int, start, out) -> None:
    trainee = Trainee(method, precision, torch.device(device), batch_size)
    trainee.images_per_second(2, warmup=3)  # warm-up outside the synchronised window
    start.wait()
    out.put(trainee.images_per_second(steps, warmup=0))


def cells_per_gpu(args: argparse.Namespace, device: torch.device, precision: str) -> None:
    print(f"\n3. Cells per GPU: k SAM processes ({precision}) training at once")
    ctx = mp.get_context("spawn")
    lone = None
    fit = 1
    for k in args.cells:
        start, out = ctx.Barrier(k), ctx.Queue()
        procs = [ctx.Process(target=_cell_worker, args=("sam", precision, str(device), args.batch_size, args.steps,
                                                        start, out)) for _ in range(k)]
        for proc in procs:
            proc.start()
        speeds = [out.get() for _ in procs]
        for proc in procs:
            proc.join()
        per_cell = min(speeds)
        lone = lone or per_cell
        full = per_cell >= 0.9 * lone
        fit = k if full else fit
        print(f"k={k}: {sum(speeds):.0f} images/s in all, slowest cell {per_cell:.0f} "
              f"({per_cell / lone:.0%} of a lone cell){'' if full else '  -> below full speed'}")
    print(f"cells per GPU at full speed: {fit}")


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: no CUDA device here; pass --device cpu --quick for a smoke run")
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}; "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}")
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(1)  # a smoke run on a shared CPU: more threads spin-wait each other
    t0 = time.perf_counter()
    speed = throughput(args, device)
    agreement(args, device)
    fastest = max(("bf16", "fp16", "fp32"), key=lambda p: speed[p, "sam"])
    cells_per_gpu(args, device, fastest)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
