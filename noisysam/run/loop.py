"""One training run under label noise: dataset -> noise -> loader -> method -> metrics -> run directory.

:func:`train` is the engine behind the paper's table (Foret et al., arXiv 2010.01412, Table 4) and
behind the CLI. It reports clean-test accuracy three ways: ``last`` (final epoch), ``best`` (max over
epochs: it peeks at the test set) and ``selected`` (the epoch with the best accuracy on a validation
split carved out of the *noisy* training set: honest model selection).

Reproducibility: every random draw comes from generators seeded from ``(seed, stage, epoch, purpose)``
(:func:`noisysam.run.seeds.derive_seed`); the caller's global RNG state is left untouched. A checkpoint is written
atomically after every epoch, so ``resume=True`` continues a killed run to the same final weights
as an uninterrupted run (CPU, same seed).

The run directory it writes, and what a resume checks, are in :mod:`noisysam.run.rundir`; what it runs, in
:mod:`noisysam.run.config`.

Cost is counted, not estimated: each epoch record (metrics.jsonl) has the training forward and backward
passes of the model in batch equivalents (:class:`PassCounter`) and the steps; result.json has their totals
over all stages beside ``wall_seconds``. Evaluation passes are not counted.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from noisysam.core.version import __version__
from noisysam.run import distributed
from noisysam.data.loader import Loader, channel_stats
from noisysam.data.streaming import DatasetLoader, DatasetPair
from noisysam.data.datasets import ImageDataset
from noisysam.methods.learner import EpochInfo, Learner, LearnerMethod
from noisysam.run.metrics import accuracy, memorisation_recovery, noise_auroc
from noisysam.models.networks import get_model
from noisysam.models.timm_models import input_normalisation, reset_classifier
from noisysam.noise.labels import NoisyLabels
from noisysam.run.config import (TrainConfig, amp_choice, build_method, method_radius, require, resolve_amp,
                                 resolve_device, method_stages)
from noisysam.run.rundir import (Data, RunConfig, RunDir, amp_of_run, check_resume, fingerprints, given_inputs,
                                  inputs, locked, prepare_out, save_dynamics)
# derive_seed's purposes: one stream per use, declared with every other use in noisysam.run.seeds
from noisysam.run.seeds import INIT as _INIT, LOADER as _LOADER, SPLIT as _SPLIT, STEP as _STEP, TORCH as _TORCH
from noisysam.run.seeds import derive_seed


#: The one-cycle schedule's shape (Smith & Topin, arXiv 1708.07120), as torch's ``OneCycleLR`` with
#: ``pct_start=0.15`` (the plain reference's) and its defaults: from base / 25 up to base over the first 15% of
#: the steps, then down to base / 25 / 1e4, both halves cosine. Momentum is not cycled.
ONECYCLE = dict(pct_start=0.15, div_factor=25.0, final_div_factor=1e4)


def lr_at(step: int, total: int, base: float, schedule: str, warmup: int = 0) -> float:
    """Learning rate at optimizer step ``step`` of ``total``: linear warm-up over ``warmup`` steps, then
    cosine to 0, step decay (x0.1 at 50% and 75%, as in He et al.) or constant; or one-cycle (:data:`ONECYCLE`;
    no warm-up of its own: it has its rise), step for step the learning rate of torch's ``OneCycleLR``."""
    if schedule == "onecycle":
        low = base / ONECYCLE["div_factor"]
        peak_step = ONECYCLE["pct_start"] * total - 1  # torch's phase boundaries: peak here, end at total - 1
        if step <= peak_step:
            start, end, t = low, base, step / peak_step
        else:
            start, end, t = base, low / ONECYCLE["final_div_factor"], (step - peak_step) / (total - 1 - peak_step)
        return end + (start - end) / 2 * (math.cos(math.pi * t) + 1)
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "step":
        return base * (0.1 ** ((t >= 0.5) + (t >= 0.75)))
    return base


class TrainingDiverged(RuntimeError):
    """The training loss, the model's outputs, or a parameter, buffer or optimizer state tensor became NaN or
    infinite; the run stopped, its last good checkpoint (all tensors finite) kept."""


@dataclass
class TrainResult:
    """What a run produced: ``summary`` (the content of result.json), ``history`` (one record per epoch,
    as in metrics.jsonl), the trained ``model``, the ``noisy_labels`` it trained on, its ``run_dir``."""

    summary: dict
    history: list
    model: nn.Module
    noisy_labels: NoisyLabels
    run_dir: Optional[Path] = None

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    @property
    def test_accuracy(self) -> dict:
        return self.summary["test_accuracy"]


Callback = Callable[[str, dict], None]


def chain(*callbacks: Optional[Callback]) -> Callback:
    """One callback calling each of ``callbacks`` (None entries skipped) in order, e.g. the CLI's progress
    display and a :class:`~noisysam.run.tensorboard.TensorBoardLogger`."""
    active = [c for c in callbacks if c is not None]

    def call(event: str, info: dict) -> None:
        for callback in active:
            callback(event, info)

    return call


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted (train, val) row indices; ``round(fraction * n)`` rows go to validation."""
    order = np.random.default_rng(derive_seed(seed, _SPLIT)).permutation(n)
    n_val = int(round(fraction * n))  # the same count train() checks leaves a training sample
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def predict(model: Union[nn.Module, Learner], loader: Loader,
            dtype: Optional[torch.dtype]) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class and per-sample cross-entropy against the loader's labels, in loader order (CPU)."""
    pred, loss, _ = predict_margins(model, loader, dtype)
    return pred, loss


@torch.no_grad()
def predict_margins(model: Union[nn.Module, Learner], loader: Loader,
                    dtype: Optional[torch.dtype]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`predict` and each sample's margin: the logit of its label minus the largest other logit
    (Pleiss et al., arXiv 2001.10528, Eq. 1), in loader order (CPU). ``model`` may be a run's
    :class:`~noisysam.methods.learner.Learner`: its method's prediction (for DivideMix, the log of the networks' mean
    softmax, so its margins are log-probability margins)."""
    model.eval()
    preds, losses, margins = [], [], []
    for x, y, _ in loader:
        with _autocast(x.device, dtype):
            logits = model(x).float()
        preds.append(logits.argmax(1))
        losses.append(nn.functional.cross_entropy(logits, y, reduction="none"))
        given = logits.gather(1, y[:, None])[:, 0]
        margins.append(given - logits.scatter(1, y[:, None], -math.inf).amax(1))
    return torch.cat(preds).cpu(), torch.cat(losses).cpu(), torch.cat(margins).cpu()


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


class PassCounter:
    """Counts the forward and backward passes of one or more models while in its ``with`` block, in batch
    equivalents (a two-network method's step costs each network's passes):
    a forward call on n of the step's ``batch`` samples adds n / batch (an m-sharpness chunk counts
    its share), and the backward through that call's output adds the same when its gradient is
    computed (for a model that returns a tensor; other outputs count forward calls only). Shapes only,
    so no device synchronisation. Set ``batch`` before each step."""

    def __init__(self, *models: nn.Module):
        self.models, self.batch, self.forward, self.backward = models, 1, 0.0, 0.0

    def __enter__(self) -> "PassCounter":
        self._handles = [model.register_forward_hook(self._count) for model in self.models]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()

    def _count(self, module: nn.Module, args: tuple, output: Any) -> None:
        share = args[0].shape[0] / self.batch
        self.forward += share
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda grad: self._count_backward(share))

    def _count_backward(self, share: float) -> None:
        self.backward += share


class _Run:
    """The state of one run between epochs; :func:`train` builds it and drives the loop."""

    def __init__(self, cfg: TrainConfig, dataset: Data, labels: NoisyLabels, model_template: Optional[nn.Module],
                 method: Any, callback: Optional[Callback], amp: str, dist: distributed.Distributed):
        self.cfg, self.dataset, self.labels, self.method, self.callback = cfg, dataset, labels, method, callback
        self.model_template = model_template
        self.dist = dist
        self.device = dist.device
        self.dtype = resolve_amp(amp, self.device)  # amp: resolved once, when the run started
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None
        self.train_idx, self.val_idx = _split(len(labels), cfg.val_fraction, cfg.seed)
        # Arrays are normalised with the model's own statistics where it declares them (a pretrained timm model's),
        # else with the training split's, shared by every loader; a torch dataset's transform does its own.
        self.norm: dict = {}
        self.normalisation: dict = dict(source="the datasets' own transform")
        if isinstance(dataset, ImageDataset):
            own = input_normalisation(model_template if model_template is not None else cfg.model)
            mean, std = own if own else channel_stats(dataset.x_train[self.train_idx])
            self.norm = dict(mean=mean, std=std)
            self.normalisation = dict(**self.norm, source="the model's pretrained config" if own else "training split")
        noisy = labels.noisy[self.train_idx]
        self.eval_train = self._loader("eval", self.train_idx, noisy, batch_size=cfg.eval_batch_size)
        self.eval_test = self._loader("test", None, dataset.y_test, batch_size=cfg.eval_batch_size)
        val_targets = (labels.noisy if cfg.val_labels == "noisy" else labels.clean)[self.val_idx]
        self.eval_val = (self._loader("eval", self.val_idx, val_targets, batch_size=cfg.eval_batch_size)
                         if len(self.val_idx) else None)
        self.history: list[dict] = []
        self.relabels: Optional[np.ndarray] = None
        self.stage1: Optional[dict] = None

    def _loader(self, split: str, rows: Optional[np.ndarray], labels: np.ndarray, *, batch_size: int,
                shuffle: bool = False, augment: bool = False, seed: int = 0) -> Union[Loader, DatasetLoader]:
        """A loader of the training set's ``rows`` (``split`` "train": as training sees them; "eval": for
        evaluation, without the training augmentation) or of the test set (``rows`` None), with ``labels``."""
        cfg, data = self.cfg, self.dataset
        common = dict(batch_size=batch_size, shuffle=shuffle, seed=seed, device=self.device,
                      channels_last=cfg.channels_last)
        if isinstance(data, DatasetPair):
            source = {"train": data.train, "eval": data.train_eval or data.train, "test": data.test}[split]
            return DatasetLoader(source, labels, rows=rows, workers=cfg.workers, **common)
        images = data.x_test if rows is None else data.x_train[rows]
        return Loader(images, labels, augment=augment, padding_mode=cfg.padding_mode, cutout=cfg.cutout, **self.norm,
                      **common)

    @property
    def stages(self) -> int:
        return method_stages(self.method)

    def build(self, stage: int, train_labels: np.ndarray) -> None:
        """A fresh learner (its networks, optimizers and per-sample state) and training loader for ``stage`` (1, or
        2 for relabel-and-retrain)."""
        cfg = self.cfg
        models, nets, optimizers = [], [], []
        for k in range(getattr(self.method, "networks", 1)):
            model, net = self.dist.wrap(self._network(stage, k))  # net: what the steps train through (DDP)
            models.append(model)
            nets.append(net)
            # Named, so that a method can tell weights from biases (asam's paper normalisation).
            optimizers.append(self.method.make_optimizer(model.named_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov))
        state = (self.method.init_state(len(self.train_idx), self.dataset.num_classes, self.device)
                 if isinstance(self.method, LearnerMethod) else {})
        self.learner = Learner(self.method, models, nets, optimizers, state)
        self.loader = self._loader("train", self.train_idx, train_labels, batch_size=cfg.batch_size, shuffle=True,
                                   augment=cfg.augment, seed=derive_seed(cfg.seed, _LOADER, stage))
        self.stage = stage

    @property
    def model(self) -> nn.Module:
        return self.learner.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.learner.optimizer

    def _network(self, stage: int, k: int) -> nn.Module:
        """Network ``k`` (from 0) of ``stage``, initialised from its own seed (network 0's is the one-network
        runs' seed), on the run's device, checked by :meth:`_probe`. A model object of yours is copied; a second
        network keeps its weights (a pretrained body stays pretrained) and draws its own classifier head."""
        cfg = self.cfg
        sample = self._sample
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, _INIT, stage, *((k,) if k else ())))
            if self.model_template is not None:
                model = copy.deepcopy(self.model_template)
                if k:
                    reset_classifier(model)
            else:
                require("in_channels" not in cfg.model_params, f"model_params may not set in_channels: it is the "
                                                              f"data's channel count ({sample.shape[1]})")
                model = get_model(cfg.model, self.dataset.num_classes, in_channels=sample.shape[1],
                                  image_size=tuple(sample.shape[2:]), **cfg.model_params)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._probe(model, sample)
        return model

    @functools.cached_property
    def _sample(self) -> torch.Tensor:
        """Two training images as evaluation feeds them to the model (their shape sizes the model), loaded once."""
        rows = self.train_idx[:2]
        return next(iter(self._loader("eval", rows, self.labels.noisy[rows], batch_size=2)))[0]

    def _probe(self, model: nn.Module, x: torch.Tensor) -> None:
        """Refuse, before anything is written, a model that cannot take 2 training images ``x`` or does not return
        (2, num_classes) logits: a forward pass without gradients in eval mode (no BatchNorm statistics change)
        under a forked RNG, the model's mode restored."""
        expected = (2, self.dataset.num_classes)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                logits = model(x)
        except Exception as e:  # any failure of the user's forward pass is a misfit of model and data
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"model {self.cfg.model} cannot take this dataset's images (a batch of shape "
                             f"{tuple(x.shape)}): {first_line}") from None
        finally:
            model.train(was_training)
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        require(shape == expected, f"model {self.cfg.model} returned {shape} for {tuple(x.shape)} images; "
                                  f"expected logits of shape {expected} (batch, num_classes)")

    def train_epoch(self, epoch: int) -> tuple[float, dict]:
        """One epoch: the learner's plan of steps (one per batch of the training loader, unless the method draws
        its own); returns the mean training loss (one host sync per epoch) and its cost: the training forward and
        backward passes counted by :class:`PassCounter`, and the steps. The learning rate follows the schedule
        over the loader's steps; a step of a method's own pass sits at its share of the epoch."""
        cfg, learner = self.cfg, self.learner
        steps = len(self.loader)
        total_steps, warmup = cfg.epochs * steps, cfg.warmup_epochs * steps
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, _STEP, self.stage, epoch))
        torch.manual_seed(derive_seed(cfg.seed, _TORCH, self.stage, epoch))  # dropout etc.; global state is forked
        self.loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        with PassCounter(*learner.models) as passes:
            passes.batch = cfg.batch_size  # an epoch hook's passes (DivideMix's co-divide) count in batches
            info = EpochInfo(epoch, steps, generator, self.sample_losses)
            learner.begin_epoch(info)
            learner.train()
            plan = learner.plan(self.loader, info)
            for b, item in enumerate(plan):
                args = self.dist.shard(*item.args, m=cfg.method_params.get("m"))
                step = epoch * steps + item.index * steps / item.of  # an integer for the loader's own batches
                lr = lr_at(step, total_steps, cfg.lr, cfg.schedule, warmup)
                for group in (g for o in learner.optimizers for g in o.param_groups):  # progress: for schedules
                    group["lr"], group["progress"] = lr, step / total_steps
                passes.batch = args[0].shape[0] if self.dist.world_size > 1 else item.batch
                with _autocast(self.device, self.dtype):
                    loss = learner.step(*args, generator=generator, scaler=self.scaler)
                loss_sum += loss.float() * self.dist.weight  # this rank's share: the mean is the batch's
                if self.callback:
                    self.callback("batch", dict(stage=self.stage, epoch=epoch + 1, batch=b + 1, batches=len(plan),
                                                loss=loss))
        self.dist.end_epoch(learner.model)
        cost = dict(forward_passes=round(passes.forward, 6), backward_passes=round(passes.backward, 6), steps=len(plan))
        return float(self.dist.mean(loss_sum)) / max(1, len(plan)), cost

    def evaluate(self) -> Optional[dict]:
        """Clean-test accuracy, fit to the noisy training labels, memorisation/recovery, noise AUROC, val accuracy;
        None when the model's outputs are no longer finite (diverged)."""
        labels = self.labels
        pred, loss, margin = predict_margins(self.learner, self.eval_train, self.dtype)
        if not torch.isfinite(loss).all():
            return None
        noisy, clean = labels.noisy[self.train_idx], labels.clean[self.train_idx]
        mem, rec = memorisation_recovery(pred, noisy, clean)
        test_pred, _ = predict(self.learner, self.eval_test, self.dtype)
        record = dict(
            test_accuracy=accuracy(test_pred, self.dataset.y_test),
            train_noisy_accuracy=accuracy(pred, noisy),
            train_clean_accuracy=accuracy(pred, clean),
            memorisation=mem,
            recovery=rec,
            noise_auroc=noise_auroc(loss, labels.is_noisy[self.train_idx]),
            val_accuracy=None,
        )
        if self.eval_val is not None:
            val_pred, _ = predict(self.learner, self.eval_val, self.dtype)
            record["val_accuracy"] = accuracy(val_pred, self.eval_val.labels.cpu())
        if len(self.learner.models) > 1:  # each network evaluated alone too
            record["test_accuracy_networks"] = [accuracy(predict(m, self.eval_test, self.dtype)[0], self.dataset.y_test)
                                                for m in self.learner.models]
        self._train_pred = pred.numpy()
        self.dynamics = dict(margin=margin.numpy(), loss=loss.numpy(), pred=self._train_pred.astype(np.int16))
        return record

    def sample_losses(self, model: nn.Module) -> torch.Tensor:
        """Each training-split sample's cross-entropy against its given label under ``model`` (eval mode, no
        augmentation), in row order: what an epoch hook such as DivideMix's co-divide reads."""
        return predict(model, self.eval_train, self.dtype)[1]

    def nonfinite(self) -> list[str]:
        """The networks' parameters and buffers, the optimizers' state tensors and the per-sample state (what a
        checkpoint holds) that contain a NaN or inf, by name; one host sync for all of them."""
        tensors = {k: v for k, v in self.learner.tensors().items()
                   if torch.is_tensor(v) and v.is_floating_point() and v.numel()}
        if not tensors:
            return []
        finite = torch.stack([torch.isfinite(v).all() for v in tensors.values()]).tolist()
        return [name for name, ok in zip(tensors, finite) if not ok]

    def checkpoint(self, epoch: int, wall: float) -> dict:
        return dict(format=1, stage=self.stage, epoch=epoch, **self.learner.state_dict(), history=self.history,
                    wall_seconds=wall,
                    relabels=None if self.relabels is None else torch.from_numpy(self.relabels), stage1=self.stage1,
                    scaler=self.scaler.state_dict() if self.scaler else None, world_size=self.dist.world_size)


def _summary(run: _Run, wall: float) -> dict:
    cfg, labels = run.cfg, run.labels
    final = [r for r in run.history if r["stage"] == run.stages]
    acc = [r["test_accuracy"] for r in final]
    best = int(np.argmax(acc))
    vals = [r["val_accuracy"] for r in final]
    selected = None if vals[0] is None else int(np.argmax(vals))
    last = final[-1]
    return dict(
        method=cfg.method, method_params=run.method.params, model=cfg.model, dataset=cfg.dataset, seed=cfg.seed,
        epochs=cfg.epochs, profile=cfg.profile,
        noise=dict(type=labels.provenance.get("kind", cfg.noise), mode=labels.provenance.get("mode"),
                   rate=labels.provenance.get("nominal_rate"), realised_rate=labels.rate,
                   realised_rate_train=float(labels.is_noisy[run.train_idx].mean())),
        test_accuracy=dict(last=last["test_accuracy"], best=acc[best], best_epoch=final[best]["epoch"],
                           selected=None if selected is None else acc[selected],
                           selected_epoch=None if selected is None else final[selected]["epoch"],
                           selected_by=f"{cfg.val_labels}-validation accuracy" if selected is not None else None),
        memorisation_last=last["memorisation"], recovery_last=last["recovery"],
        noise_auroc_last=last["noise_auroc"], val_accuracy_last=last["val_accuracy"], rho=method_radius(cfg, labels),
        stage1=run.stage1, wall_seconds=wall, **_total_cost(run.history), device=str(run.device),
        networks=len(run.learner.models), prediction=getattr(run.method, "prediction", "the network"),
        amp=str(run.dtype).replace("torch.", "") if run.dtype else "fp32",
    )


def _total_cost(history: list[dict]) -> dict:
    """Training passes and steps over every epoch of every stage (None where a record predates counting)."""
    def total(key: str) -> Optional[float]:
        return round(sum(r[key] for r in history), 6) if all(key in r for r in history) else None

    return dict(forward_passes=total("forward_passes"), backward_passes=total("backward_passes"),
                train_steps=total("steps"))


def train(config: Optional[TrainConfig] = None, *, dataset: Union[str, ImageDataset, DatasetPair, tuple, None] = None,
          noise: Union[str, NoisyLabels, None] = None, model: Union[str, nn.Module, None] = None,
          callback: Optional[Callback] = None, **overrides: Any) -> TrainResult:
    """Train ``config.method`` on noisy labels and report clean-test accuracy (see the module docstring).

    ``config`` (or keyword ``overrides`` of its fields) says what to run; ``dataset``, ``noise`` and
    ``model`` given as strings are those config fields. For your own data pass ``dataset``: an
    :class:`~noisysam.data.datasets.ImageDataset` (arrays in memory), or any map-style torch ``Dataset`` s of
    (image, label) as ``(train, test)`` or ``(train, test, train_eval)`` (a
    :class:`~noisysam.data.streaming.DatasetPair`: their transforms make the images, the noise goes into the training
    labels); ``noise`` (a :class:`~noisysam.noise.labels.NoisyLabels` for its training labels) and/or ``model`` (any
    ``nn.Module`` mapping (B, C, H, W) to (B, K) logits, checked on 2 training images first; relabel-and-retrain
    restarts from a copy of it as given, a second network copies it with its own classifier head). ``callback(event,
    info)`` receives
    ``"start"``, ``"batch"`` (the loss as an unsynchronised tensor), ``"epoch"`` and ``"end"`` events.
    Raises ValueError for bad settings before writing anything, and :class:`TrainingDiverged` on NaN loss.
    """
    dataset, noise, model = given_inputs(overrides, dataset, noise, model)
    cfg = (config or TrainConfig()).with_settings(**overrides)
    custom: dict[str, Any] = {}
    if dataset is not None:
        custom["dataset"] = f"custom:{dataset.name}"
    if noise is not None:
        custom["noise"] = f"custom:{noise.provenance.get('kind', 'labels')}"
    if model is not None:
        custom.update(model=f"custom:{type(model).__name__}", model_params={})
    # A field an object stands for is the object, not a name to check: validate the rest with the field at its
    # default (a resumed run's saved config holds the "custom:..." names).
    unset = {name: getattr(TrainConfig(), name) for name in custom}
    cfg = dataclasses.replace(dataclasses.replace(cfg, **unset).resolved(), **custom)
    with locked(cfg) as out:  # one writer per run directory, from the first read to the last write
        saved, ckpt = prepare_out(cfg, out)

        data, labels = inputs(cfg, dataset, noise)  # checked once: the labels belong to the data
        n_val = int(round(cfg.val_fraction * len(labels)))
        require(n_val < len(labels), f"val_fraction {cfg.val_fraction} leaves no training samples: {n_val} of "
                                    f"{len(labels)} would go to validation")
        method = build_method(cfg, labels)  # a profile radius follows the labels' own noise rate

        gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=gpus), \
                distributed.setup(resolve_device(cfg.device), cfg.sam_sync, cfg.sync_bn) as dist:
            return _train(cfg, data, labels, model, method, callback, out, saved, ckpt, dist)


def _train(cfg: TrainConfig, data: Data, labels: NoisyLabels, model: Optional[nn.Module], method: Any,
           callback: Optional[Callback], out: Optional[Path], saved: Optional[RunConfig],
           ckpt: Optional[dict], dist: distributed.Distributed) -> TrainResult:
    callback = callback if dist.is_writer else None
    recorded = fingerprints(data, labels) if out is not None else {}
    amp = amp_of_run(cfg, saved)
    run = _Run(cfg, data, labels, model, method, callback, amp, dist)
    dist.check(cfg.batch_size, len(run.train_idx), cfg.method_params.get("m"))
    if isinstance(method, LearnerMethod):
        require(dist.world_size == 1, f"method {cfg.method!r} keeps per-sample state or trains several networks, which "
                                     f"noisysam does not split over processes; run it in one process (no --nproc)")
        method.check_labels(labels.noisy[run.train_idx], data.num_classes)
    if saved is not None:
        check_resume(out, saved, recorded, ckpt, run.stages, cfg.epochs)
    if ckpt is not None:
        distributed.check_resume(ckpt.get("world_size", 1), dist.world_size, str(out))
    rundir = RunDir(out) if out is not None else None
    writer = rundir if dist.is_writer else None  # rank 0 alone writes the run directory
    wall0 = 0.0
    start_stage, start_epoch = 1, 0
    if ckpt is not None:
        run.history, run.stage1, wall0 = ckpt["history"], ckpt["stage1"], ckpt["wall_seconds"]
        run.relabels = None if ckpt["relabels"] is None else ckpt["relabels"].numpy()
        start_stage, start_epoch = ckpt["stage"], ckpt["epoch"]
    run.build(start_stage, _stage_labels(run, start_stage))  # bad model settings fail here, before any write
    if ckpt is not None:
        run.learner.load_state_dict(ckpt)
        if run.scaler and ckpt.get("scaler"):
            run.scaler.load_state_dict(ckpt["scaler"])
        finished = start_stage == run.stages and start_epoch == cfg.epochs
        if finished and rundir.finished:
            return TrainResult(rundir.result(), run.history, run.model, labels, out)
    if writer is not None and ckpt is None:
        writer.write_config(dict(config=cfg.to_dict(), method_params=method.params,
                                 noise=labels.summary(), noisysam_version=__version__,
                                 inputs=recorded, amp=amp, amp_choice=amp_choice(cfg.amp, run.device)[1],
                                 input_normalisation=run.normalisation,
                                 torch_version=torch.__version__, device=str(run.device),
                                 world_size=dist.world_size, train_rows=len(run.train_idx),
                                 val_rows=len(run.val_idx)))
        writer.save_labels(labels)
        save_dynamics(out, 0, 0, dict(rows=run.train_idx))
    if callback:
        callback("start", dict(stages=run.stages, epochs=cfg.epochs, batches=len(run.loader), config=cfg,
                               stage=start_stage, epoch=start_epoch, history=list(run.history)))
    t0 = time.perf_counter() - wall0
    for stage in range(start_stage, run.stages + 1):
        if stage != run.stage:
            run.build(stage, _stage_labels(run, stage))
        for epoch in range(start_epoch if stage == start_stage else 0, cfg.epochs):
            train_loss, cost = run.train_epoch(epoch)
            # Checked once per epoch, before anything of this epoch is written: every checkpoint is finite.
            broken = [f"the training loss ({train_loss})"] if not math.isfinite(train_loss) else run.nonfinite()
            metrics = None if broken else run.evaluate()
            if metrics is None:
                kept = rundir is not None and rundir.checkpoint_path.exists()
                where = f"{rundir.checkpoint_path} (stage {run.stage}, epoch {epoch})" if kept else "none (no epoch finished)"
                what = (", ".join(broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
                        or "the model's outputs")
                raise TrainingDiverged(f"training diverged in epoch {epoch + 1} of stage {stage}: "
                                       f"{what} became non-finite; stopped. "
                                       f"Last good checkpoint: {where}. Try a lower lr.")
            record = dict(stage=stage, epoch=epoch + 1, lr=run.optimizer.param_groups[0]["lr"],
                          train_loss=train_loss, **metrics, **cost, seconds=time.perf_counter() - t0)
            run.history.append(record)
            if stage == 1 and run.stages == 2 and epoch + 1 == cfg.epochs:
                # Relabel-and-retrain: the first model's predictions become the training labels of stage 2.
                run.relabels = run._train_pred.copy()
                last = run.history[-1]
                run.stage1 = dict(test_accuracy=last["test_accuracy"], memorisation=last["memorisation"],
                                  relabel_accuracy=accuracy(run.relabels, labels.clean[run.train_idx]))
            if out is not None:
                if writer is not None:
                    save_dynamics(out, stage, epoch + 1, run.dynamics)  # before the checkpoint: a resume redoes it
                    writer.write_metrics(run.history)
                if run.relabels is not None and stage == 1:  # stage 1 done: checkpoint the start of stage 2
                    run.build(2, run.relabels)
                    if writer is not None:
                        writer.save_checkpoint(run.checkpoint(0, time.perf_counter() - t0))
                elif writer is not None:
                    writer.save_checkpoint(run.checkpoint(epoch + 1, time.perf_counter() - t0))
            if callback:  # after the writes: stopping here keeps this epoch
                callback("epoch", record)
    wall = time.perf_counter() - t0
    summary = _summary(run, wall)
    if writer is not None:
        writer.write_result(summary)
    if callback:
        callback("end", summary)
    return TrainResult(summary, run.history, run.model, labels, out)


def _stage_labels(run: _Run, stage: int) -> np.ndarray:
    """Training labels of a stage: the noisy labels, or in stage 2 the first model's predictions."""
    return run.labels.noisy[run.train_idx] if stage == 1 else run.relabels
