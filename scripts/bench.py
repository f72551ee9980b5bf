"""noisysam's benchmarks, each a ratio measured side by side in one run (interleaved repeats, median).

(a) SAM step time / SGD step time, ResNet-32, same batch, through a noisysam method's ``train_step``
    (fp32 and bf16 autocast). Two forward/backward passes are the floor: target <= 2.05.
(b) Training-epoch throughput (images/s) of noisysam's on-device Loader + the trainer's step vs the
    same model and step fed by a torchvision DataLoader with per-image PIL transforms (RandomCrop(32,
    padding=4), RandomHorizontalFlip, ToTensor, Normalize: davda54/sam's example pipeline). Target >= 1.5x.
(c) Cost of m-sharpness (Foret et al. 2021, Section 2/Figure 3), m in {B, 32, 8}, relative to plain SAM.
(d) fp32, bf16 autocast and amp auto side by side: training throughput of the CPU profile's CNN under SAM, and
    whether auto picks the faster of the two on this machine.
(e) Issue 12: wall time of the paper's 20-cell CPU-profile grid (seed 0) run as ``--jobs 2 --threads 1`` vs
    ``--jobs 1 --threads 2`` (noisysam.grid.executors), each in a fresh directory; over an hour per variant, so
    only with ``--sections e``; ``--grid-epochs N`` runs the same 20 cells at N epochs each (every cell
    shortened alike, for slower machines); ``--quick`` times a 2 x 2 grid of 2 epochs instead (a smoke test).
(f) Issue 31: seconds per epoch of a SAM run of ``noisysam train`` on the CPU profile against the plain reference
    (scripts/plain_reference.py), the two run at the same time with one thread each. Target <= 1.1x.

(g) Issue 32: SGD epoch throughput of the CPU profile's model fed by the batched on-device Loader (arrays) against
    the same images as a torch Dataset with per-image transforms, streamed by DatasetLoader (the general path).

Usage: ``python scripts/bench.py [--quick] [--sections abcdfg] [--threads N] [--batch-size 128] [--images N]
[--repeats N] [--grid-repeats N] [--grid-epochs N] [--reference-epochs N]``.
Timings interleave the compared variants in each repeat (order rotated), so load from other processes
hits them alike; each ratio is the median over repeats of the per-repeat ratio.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from typing import Callable, Optional

import numpy as np
import torch

from noisysam.grid import cells as grid_cells, executors, paper
from noisysam.data.loader import Loader
from noisysam.data.streaming import DatasetLoader
from noisysam.data.datasets import load_dataset
from noisysam.methods.registry import get_method
from noisysam.models.networks import get_model
from noisysam.run.config import TrainConfig, amp_choice, resolve_amp, resolve_device

Step = Callable[[], None]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke mode: few repeats, few images")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=None, help="training images per epoch in (b) (default 2048; quick 256)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per comparison (default 7; quick 2)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to compare in (b)")
    p.add_argument("--device", default="auto")
    p.add_argument("--sections", default="abcdfg", help="which sections to run, e.g. 'abcdfg' (default) or 'e' (the grid)")
    p.add_argument("--grid-repeats", type=int, default=None, help="timed rounds of (e) (default 1; quick 2)")
    p.add_argument("--grid-epochs", type=int, default=None,
                   help="epochs per cell in (e) (default: the profile's 60); fewer shortens every cell alike")
    p.add_argument("--reference-epochs", type=int, default=6, help="epochs of each run in (f) (default 6; quick 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("threads", "batch_size", "grid_epochs", "reference_epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    args.images = args.images or (256 if args.quick else 2048)
    args.repeats = args.repeats or (2 if args.quick else 7)
    args.grid_repeats = args.grid_repeats or (2 if args.quick else 1)
    if set(args.sections) - set("abcdefg"):
        p.error(f"--sections takes letters of 'abcdefg', got {args.sections!r}")
    args.warmup = 2  # the first two calls of a new model are far slower on CPU (oneDNN primitive set-up)
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


FIRST_CALL: dict[str, float] = {}  # seconds of each variant's first (warm-up) call, for the record


def interleaved(variants: dict[str, Step], repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each variant: ``warmup`` untimed calls each, then ``repeats`` rounds in which
    every variant runs once (order rotated each round)."""
    names = list(variants)
    for name in names:
        for i in range(warmup):
            t0 = time.perf_counter()
            variants[name]()
            sync(device)
            if i == 0:
                FIRST_CALL[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            variants[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


class Trainee:
    """A model, its method and optimizer, as the trainer builds them (channels_last unless told, lr 0.05)."""

    def __init__(self, model: str, method: str, device: torch.device, seed: int, channels_last: bool = True,
                 model_params: Optional[dict] = None, **method_params) -> None:
        torch.manual_seed(seed)  # a benchmark script owns its process: the global seed is ours to set
        self.model = get_model(model, 10, **(model_params or {})).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.method = get_method(method, **method_params)
        self.optimizer = self.method.make_optimizer(self.model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.generator = torch.Generator().manual_seed(seed)
        self.model.train()

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
        with autocast(x.device, dtype):
            return self.method.train_step(self.model, self.optimizer, x, y, idx, generator=self.generator)


def fixed_batch(data, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loader = Loader(data.x_train[:batch_size], data.y_train[:batch_size], batch_size=batch_size, device=device,
                    channels_last=True)
    return next(iter(loader))


def step_variants(trainees: dict[str, tuple[Trainee, Optional[torch.dtype]]], batch) -> dict[str, Step]:
    x, y, idx = batch
    return {name: (lambda t=t, d=d: t.step(x, y, idx, d)) for name, (t, d) in trainees.items()}


# ----------------------------------------------------------------------------------------- (b) pipelines

class PILImages(torch.utils.data.Dataset):
    """The embedded images as torchvision.datasets.CIFAR10 serves them: a PIL image per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        from PIL import Image

        self.images, self.labels, self.transform, self.to_pil = images, labels, transform, Image.fromarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.to_pil(self.images[i])), int(self.labels[i]), i


def torchvision_epoch(trainee: Trainee, images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int,
                      mean, std, device: torch.device, seed: int) -> Step:
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PILImages(images, labels, transform), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         generator=torch.Generator().manual_seed(seed))

    def epoch() -> None:
        for x, y, idx in loader:
            trainee.step(x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx, None)

    return epoch


def noisysam_epoch(trainee: Trainee, loader: Loader, dtype: Optional[torch.dtype]) -> Step:
    state = {"epoch": 0}

    def epoch() -> None:
        loader.set_epoch(state["epoch"])
        state["epoch"] += 1
        for x, y, idx in loader:
            trainee.step(x, y, idx, dtype)

    return epoch


# ------------------------------------------------------------------------------------------- (e) grid

def grid_variants(quick: bool, epochs: Optional[int]) -> tuple[TrainConfig, dict, dict[str, Callable[[], executors.Executor]]]:
    """The grid's config and cells (methods, rates, seeds) and its two executors, built fresh per round.
    ``epochs`` (None: the profile's) shortens every cell alike, its schedule included."""
    if quick:
        config, cells = TrainConfig(profile="cpu", epochs=epochs or 2), dict(methods=["sgd", "sam"], rates=[0.2, 0.6],
                                                                            seeds=[0])
    else:
        config, cells = (TrainConfig(profile="cpu", epochs=epochs),
                         dict(methods=paper.PAPER_METHODS, rates=paper.PAPER_RATES, seeds=[0]))
    return config, cells, {"jobs 2 x 1 thread": lambda: executors.LocalProcesses(2, threads=1),
                           "jobs 1 x 2 threads": lambda: executors.InProcess(threads=2)}


def time_grid(config: TrainConfig, cells: dict, executor: executors.Executor) -> float:
    """Seconds to train the grid from nothing (a fresh temporary directory) with ``executor``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="noisysam-bench-grid-") as root:
        t0 = time.perf_counter()
        grid_cells.run_grid(grid_cells.grid(root, **cells), config, executor=executor)
        return time.perf_counter() - t0


# -------------------------------------------------------------------------------------------- report

ROWS: list[tuple[str, str, str, str]] = []


def report(section: str, what: str, value: str, target: str = "") -> None:
    ROWS.append((section, what, value, target))
    print(f"  {what:<78} {value:>8}  {target}", flush=True)


def section_a(args: argparse.Namespace, ctx: dict) -> None:
    print("\n(a) SAM step / SGD step, resnet32, same batch, methods.train_step")
    device, batch = ctx["device"], ctx["batch"]
    for label, dtype in (("fp32", None), ("bf16 autocast", ctx["bf16"])):
        trainees = {k: (Trainee("resnet32", k, device, args.seed), dtype) for k in ("sgd", "sam")}
        t = interleaved(step_variants(trainees, batch), args.repeats, args.warmup, device)
        report("a", f"{label}: SGD {1e3 * statistics.median(t['sgd']):.0f} ms, SAM "
                    f"{1e3 * statistics.median(t['sam']):.0f} ms per step", f"{median_ratio(t['sam'], t['sgd']):.2f}x",
               "target <= 2.05")


def section_b(args: argparse.Namespace, ctx: dict) -> None:
    # noisysam as the trainer runs it (on-device Loader, channels_last, amp "auto") and in fp32, vs the
    # usual pipeline as davda54/sam's example runs it (DataLoader + PIL transforms, fp32, default layout).
    device, auto, data, cpu, B = ctx["device"], ctx["auto"], ctx["data"], ctx["cpu"], args.batch_size
    print(f"\n(b) training epoch throughput, SAM, {args.images} images, batch {B}: noisysam Loader + trainer "
          "step vs torchvision DataLoader + PIL transforms (fp32, NCHW)")
    images, labels = data.x_train[:args.images], data.y_train[:args.images]
    for model, params in ((cpu.model, cpu.model_params), ("resnet32", {})):
        loader = Loader(images, labels, batch_size=B, device=device, channels_last=True, seed=args.seed)
        sam_trainee = functools.partial(Trainee, model, "sam", device, args.seed, model_params=params)
        variants: dict[str, Step] = {}
        if auto is not None:
            variants[f"noisysam defaults (channels_last, {str(auto)[6:]})"] = noisysam_epoch(
                sam_trainee(), loader, auto)
        variants["noisysam fp32 (channels_last)"] = noisysam_epoch(sam_trainee(), loader, None)
        for w in args.workers:
            variants[f"torchvision workers={w}"] = torchvision_epoch(
                sam_trainee(channels_last=False), images, labels, B, w, loader.mean, loader.std, device, args.seed)
        t = interleaved(variants, args.repeats, args.warmup, device)
        ips = {k: len(labels) / statistics.median(v) for k, v in t.items()}
        for k, v in ips.items():
            report("b", f"{model} {k}: images/s (first epoch {FIRST_CALL[k]:.1f} s)", f"{v:.0f}")
        tv = [k for k in t if k.startswith("torchvision")]
        best_tv = max(tv, key=lambda k: ips[k])
        for k in (k for k in t if k.startswith("noisysam")):
            report("b", f"{model} {k.split(' (')[0]} / torchvision {best_tv.split()[-1]} (fastest)",
                   f"{median_ratio(t[best_tv], t[k]):.2f}x", "target >= 1.5" if "defaults" in k else "(fp32 alone)")


def section_c(args: argparse.Namespace, ctx: dict) -> None:
    device, B = ctx["device"], args.batch_size
    print("\n(c) m-sharpness cost, resnet32, fp32, batch", B)
    ms = {"m=B": None, "m=32": 32, "m=8": 8}
    trainees = {k: (Trainee("resnet32", "sam", device, args.seed, m=m), None) for k, m in ms.items()}
    t = interleaved(step_variants(trainees, ctx["batch"]), args.repeats, args.warmup, device)
    for k in ("m=32", "m=8"):
        report("c", f"SAM {k} step / plain SAM (m=B={B}) step ({1e3 * statistics.median(t[k]):.0f} vs "
                    f"{1e3 * statistics.median(t['m=B']):.0f} ms)", f"{median_ratio(t[k], t['m=B']):.2f}x", "(cost)")


def section_d(args: argparse.Namespace, ctx: dict) -> None:
    device, bf16, cpu = ctx["device"], ctx["bf16"], ctx["cpu"]
    auto, why = amp_choice("auto", device)
    print(f"\n(d) fp32, bf16 autocast and amp auto, training throughput, {cpu.model} (CPU profile), SAM, batch",
          args.batch_size)
    trainees = {k: (Trainee(cpu.model, "sam", device, args.seed, model_params=cpu.model_params), d)
                for k, d in (("fp32", None), ("bf16", bf16))}
    t = interleaved(step_variants(trainees, ctx["batch"]), args.repeats * 2, args.warmup, device)
    ms = {k: 1e3 * statistics.median(v) for k, v in t.items()}
    chosen = "bf16" if auto == bf16 else "fp32"
    report("d", f"{cpu.model} SAM per step: fp32 {ms['fp32']:.0f} ms, bf16 {ms['bf16']:.0f} ms; bf16 speed-up",
           f"{median_ratio(t['fp32'], t['bf16']):.2f}x", "(> 1: bf16 faster)")
    faster = "fp32" if ms["fp32"] <= ms["bf16"] else "bf16"
    report("d", f"amp auto -> {chosen} ({why}); the faster here: {faster}", f"{ms[chosen]:.0f} ms",
           "auto picks the faster" if chosen == faster else "AUTO PICKED THE SLOWER")


def section_e(args: argparse.Namespace, ctx: dict) -> None:
    config, cells, variants = grid_variants(args.quick, args.grid_epochs)
    n = len(grid_cells.grid(".", **cells))
    print(f"\n(e) grid wall time, {n} cells ({', '.join(cells['methods'])} x rates "
          f"{', '.join(map(str, cells['rates']))}, seed 0), profile cpu, {config.resolved().epochs} epochs"
          f"{' (quick grid: not the README figure)' if args.quick else ''}")
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.grid_repeats):  # each round runs both variants, order rotated
        for name in names[r % 2:] + names[:r % 2]:
            times[name].append(time_grid(config, cells, variants[name]()))
            print(f"  round {r + 1}: {name}: {times[name][-1] / 60:.1f} min", flush=True)
    jobs2, jobs1 = (times[name] for name in names)
    report("e", f"grid: jobs 2 x 1 thread {statistics.median(jobs2) / 60:.1f} min, jobs 1 x 2 threads "
                f"{statistics.median(jobs1) / 60:.1f} min; speed-up of --jobs 2 --threads 1",
           f"{median_ratio(jobs1, jobs2):.2f}x", "(quick grid)" if args.quick else "target >= 1.49 (67 -> 45 min)")


def section_f(args: argparse.Namespace, ctx: dict) -> None:
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    epochs = 3 if args.quick else args.reference_epochs
    print(f"\n(f) one SAM epoch of `noisysam train` (CPU profile, amp auto) vs scripts/plain_reference.py (fp32), 60% "
          f"noise, {epochs} epochs each, both at once on one thread each")
    script = Path(__file__).resolve().parent / "plain_reference.py"
    with tempfile.TemporaryDirectory(prefix="noisysam-bench-reference-") as root:
        ours = subprocess.Popen([sys.executable, "-m", "noisysam", "train", "--method", "sam", "--noise-rate", "0.6",
                                 "--epochs", str(epochs), "--threads", "1", "--no-plot", "--out", f"{root}/run"],
                                stdout=subprocess.DEVNULL)
        theirs = subprocess.Popen([sys.executable, str(script), "--method", "sam", "--noise-rate", "0.6", "--epochs",
                                   str(epochs), "--threads", "1", "--out", f"{root}/plain.json"], stdout=subprocess.DEVNULL)
        if ours.wait() or theirs.wait():
            raise SystemExit("(f): a training run failed")
        with open(f"{root}/run/metrics.jsonl") as f:
            mine = [json.loads(line)["seconds"] for line in f]
        plain = [r["seconds"] for r in json.loads(Path(f"{root}/plain.json").read_text())["history"]]
    # Seconds per epoch after the first (which pays oneDNN's set-up), from each run's own clock.
    per_epoch = {name: statistics.median(b - a for a, b in zip(t, t[1:])) for name, t in (("ours", mine),
                                                                                          ("plain", plain))}
    report("f", f"seconds per SAM epoch: noisysam {per_epoch['ours']:.1f}, plain reference {per_epoch['plain']:.1f}; "
                "ratio", f"{per_epoch['ours'] / per_epoch['plain']:.2f}x", "target <= 1.1")


class TransformedImages(torch.utils.data.Dataset):
    """The embedded images as a user's torch dataset serves them: uint8 (C, H, W) tensors through a per-image
    torchvision.transforms.v2 pipeline (4-px reflect crop, flip, scale to [0, 1], normalise)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std) -> None:
        from torchvision.transforms import v2

        self.images, self.labels = torch.as_tensor(images).permute(0, 3, 1, 2), labels
        self.transform = v2.Compose([v2.RandomCrop(32, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip(),
                                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def section_g(args: argparse.Namespace, ctx: dict) -> None:
    device, data, cpu, B = ctx["device"], ctx["data"], ctx["cpu"], args.batch_size
    print(f"\n(g) SGD epoch throughput, {cpu.model}, {args.images} images, batch {B}: the batched on-device Loader "
          "(arrays) vs a torch Dataset streamed by DatasetLoader (per-image transforms), fp32")
    images, labels = data.x_train[:args.images], data.y_train[:args.images]
    loader = Loader(images, labels, batch_size=B, device=device, channels_last=True, seed=args.seed,
                    padding_mode="reflect")
    trainee = functools.partial(Trainee, cpu.model, "sgd", device, args.seed, model_params=cpu.model_params)
    variants: dict[str, Step] = {"Loader (arrays)": noisysam_epoch(trainee(), loader, None)}
    dataset = TransformedImages(images, labels, loader.mean, loader.std)
    for w in args.workers:
        variants[f"DatasetLoader workers={w}"] = noisysam_epoch(
            trainee(), DatasetLoader(dataset, labels, batch_size=B, device=device, channels_last=True, workers=w,
                                     seed=args.seed), None)
    t = interleaved(variants, args.repeats, args.warmup, device)
    for k, v in t.items():
        report("g", f"{k}: images/s", f"{len(labels) / statistics.median(v):.0f}")
    for k in (k for k in t if k.startswith("DatasetLoader")):
        report("g", f"{k} / Loader: epoch time", f"{median_ratio(t[k], t['Loader (arrays)']):.2f}x",
               "(the general path's cost)")


SECTIONS = dict(a=section_a, b=section_b, c=section_c, d=section_d, e=section_e, f=section_f, g=section_g)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    auto = resolve_amp("auto", device)
    ctx = dict(device=device, bf16=resolve_amp("bf16", device), auto=auto, data=load_dataset("cifar10-mini"),
               cpu=TrainConfig(profile="cpu").resolved())  # the CPU profile's model, built as the trainer builds it
    ctx["batch"] = fixed_batch(ctx["data"], args.batch_size, device)
    print(f"noisysam benchmarks: device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"torch {torch.__version__}, amp auto -> {auto}, load average {os.getloadavg()[0]:.2f}"
          f"{' (quick mode)' if args.quick else ''}")
    for letter in dict.fromkeys(args.sections):
        SECTIONS[letter](args, ctx)

    print(f"\nsummary (load average now {os.getloadavg()[0]:.2f}):")
    print(f"  {'':3}{'measurement':<78} {'value':>8}  target")
    for section, what, value, target in ROWS:
        if target:
            print(f"  {section:<3}{what:<78} {value:>8}  {target}")


if __name__ == "__main__":
    main()
