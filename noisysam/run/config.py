"""What one run trains: :class:`TrainConfig` (its fields declared once in :data:`CONFIG_PARAMS`), the training
profiles that fill what it leaves unset (``cpu``: the embedded data on 2 cores; ``paper``: the SAM paper's
ResNet-32 protocol, Foret et al., arXiv 2010.01412), the device and precision it resolves to, and the method it
builds (with the profile's SAM radius where the method takes plain SAM's)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from noisysam.run import distributed
from noisysam.data.loader import DEVICE, check_device
from noisysam.methods.rules import METHOD_PARAMS
from noisysam.methods.registry import METHODS, SAM_UPDATES, get_method, method_info, takes_param
from noisysam.models.networks import MODEL_NAME
from noisysam.noise.labels import KINDS, NoisyLabels
from noisysam.core.params import Boolean, InstanceOf, Interval, Options, PathLike, Text, declare, did_you_mean

# Profiles fill the fields left as None. "cpu": the plain reference's recipe (scripts/plain_reference.py: the
# 5-conv CNN, crop and flip on every batch, Nesterov SGD, one-cycle to 0.05) on the embedded data, trained long
# enough that SGD memorises the wrong labels (docs/cpu-profile.md says how it was chosen). "paper": the paper's
# ResNet-32 protocol; what it leaves unstated follows ASAM's public CIFAR code. A profile's rho is plain SAM's
# radius (for the methods whose record has sam_radius only, noisysam.methods.registry.REGISTRY) up to 60% noise; at 80% it is halved, as the
# paper does (0.1 -> 0.05), see profile_rho and method_radius.
PROFILES: dict[str, dict[str, Any]] = {
    "cpu": dict(model="cnn5", model_params={"width": 32}, epochs=120, batch_size=128, lr=0.05, warmup_epochs=0,
                weight_decay=5e-4, nesterov=True, schedule="onecycle", augment=True, padding_mode="reflect", rho=0.1),
    "paper": dict(model="resnet32", epochs=200, batch_size=128, lr=0.1, warmup_epochs=0, weight_decay=5e-4,
                  nesterov=False, schedule="cosine", augment=True, padding_mode="constant", rho=0.1),
}
SCHEDULES = ("cosine", "onecycle", "step", "constant")
PADDING_MODES = ("constant", "reflect")
AMP_MODES = ("auto", "none", "bf16", "fp16")
VAL_LABELS = ("noisy", "clean")


#: TrainConfig fields that go to the methods taking them, by the method parameter they fill.
METHOD_FIELDS = {"rho": "rho", "mixup_alpha": "alpha"}


def profile_rho(profile: str, rate: float) -> float:
    """The profile's SAM radius at noise rate ``rate``: its rho, halved from 80% noise on (the paper's Section
    3.3 uses 0.1 at 20/40/60% and 0.05 at 80%)."""
    rho = PROFILES[profile]["rho"]
    return rho / 2 if rate >= 0.8 else rho


def labels_rate(labels: NoisyLabels) -> tuple[float, str]:
    """The noise rate of ``labels`` that the 80% rule reads, and which it is: their nominal rate (the rate
    asked of the noise model, also for a labels file) or, where they have none (CIFAR-10N, labels of
    your own), their realised rate."""
    nominal = labels.provenance.get("nominal_rate")
    return (float(nominal), "nominal") if nominal is not None else (float(labels.rate), "realised")


def method_radius(cfg: "TrainConfig", labels: Optional[NoisyLabels]) -> Optional[dict]:
    """The radius ``rho`` a run's method uses and where it comes from (recorded in result.json); None for a
    method without one. ``source``: "user" (``rho`` or ``method_params``), "profile" (plain SAM's ball only,
    the methods whose radius rule is "profile", :attr:`noisysam.methods.registry.MethodInfo.radius`: :func:`profile_rho` at the ``noise_rate`` of ``labels``,
    ``rate`` saying "nominal" or "realised", see :func:`labels_rate`) or "method default" (e.g. asam's 0.5).
    ``labels`` None (a config checked before its labels exist) reads the config's ``noise_rate``."""
    info = method_info(cfg.method)
    if info.radius is None:
        return None
    given = cfg.method_params.get("rho", cfg.rho)
    if given is not None:
        return dict(value=given, source="user")
    update = cfg.method_params.get("update", "sam")  # a field method's -sam form may take momentum-SAM's update
    if info.radius == "profile" and update == "sam":
        rate, kind = (cfg.noise_rate, "config") if labels is None else labels_rate(labels)
        return dict(value=profile_rho(cfg.profile, rate), source="profile", profile=cfg.profile, noise_rate=rate,
                    rate=kind)
    default = info.defaults.get("rho")
    if default is None and info.radius == "profile" and update in SAM_UPDATES:  # else the factory refuses
        default = SAM_UPDATES[update]().rho
    return dict(value=default, source="method default")


_COUNT = [Interval(int, 1), None]  # None: from the profile
_AMOUNT = [Interval(float, 0), None]
_PARAMS = InstanceOf(dict, description="a dict of parameters")

#: What every TrainConfig field may be; checked by TrainConfig.resolved() (and so by train() and the CLI).
CONFIG_PARAMS = declare("noisysam.run.config.TrainConfig", dict(
    dataset=Text(description="a dataset name or the path of a dataset .npz or folder"),
    data_root=[PathLike(), None],
    download=Boolean(),
    noise=[Options(KINDS), Text(r".+\.npz", "a saved labels file (.npz)")],
    noise_rate=Interval(float, 0, 1),
    noise_mode=Options(("replace", "flip")),
    noise_exact=Boolean(),
    method=Options(METHODS),
    method_params=_PARAMS,
    rho=[METHOD_PARAMS["rho"], None],  # the method's own constraints
    mixup_alpha=[METHOD_PARAMS["alpha"], None],
    model=[*MODEL_NAME, None],
    model_params=_PARAMS,
    epochs=_COUNT,
    batch_size=_COUNT,
    lr=_AMOUNT,
    momentum=Interval(float, 0, 1, closed="left"),
    nesterov=[Boolean(), None],
    weight_decay=_AMOUNT,
    schedule=[Options(SCHEDULES), None],
    warmup_epochs=[Interval(int, 0), None],
    augment=[Boolean(), None],
    padding_mode=[Options(PADDING_MODES), None],
    cutout=Interval(int, 0),
    val_fraction=Interval(float, 0, 1, closed="left"),
    val_labels=Options(VAL_LABELS),
    seed=Interval(int, 0),
    device=[Options(("auto",)), DEVICE],
    amp=Options(AMP_MODES),
    channels_last=Boolean(),
    eval_batch_size=Interval(int, 1),
    workers=Interval(int, 0),
    profile=Options(PROFILES),
    sam_sync=Options(distributed.SAM_SYNC),
    sync_bn=Boolean(),
    out=[PathLike(), None],
    resume=Boolean(),
))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved as ``config.json``. ``None`` fields come from the profile.

    ``noise``: a kind of :data:`noisysam.noise.labels.KINDS` or the path of a saved labels file (.npz).
    ``method_params``: extra parameters of the method (e.g. ``{"p": 3}``, ``{"mode": "soft"}``, ``{"q": 0.7}``).
    ``rho`` and ``mixup_alpha`` go to the method's ``rho`` / ``alpha``; a method that takes none refuses them.
    ``rho`` None: the profile's radius for plain SAM's ball (sam, bootstrap-sam, mixup-sam), from the labels'
    own noise rate once they exist (:func:`method_radius`), else the method's default (asam: 0.5); it stays
    None here and in config.json, the radius used is in config.json's method_params and result.json.
    ``mixup_alpha`` None: the method's default.
    ``val_fraction`` of the training set is held out for model selection, labelled ``val_labels``
    (noisy: honest; clean: the paper's rho search on a clean split).
    ``workers``: DataLoader worker processes for a dataset of torch ``Dataset`` s (``train(dataset=(train, test))``);
    arrays ignore it (they are batched on the device). ``eval_batch_size``: the batch of the per-epoch evaluation passes; small batches keep a CPU's caches warm (the
    CPU profile's CNN evaluates 1.45x faster at 64-128 than at 1000); it changes no result beyond float rounding.
    ``sam_sync`` and ``sync_bn``: SAM's first pass and BatchNorm across processes when the run is data-parallel
    (torchrun, ``--nproc``; :mod:`noisysam.run.distributed`); no effect in one process.
    """

    dataset: str = "cifar10-mini"
    data_root: Optional[str] = None
    download: bool = False
    noise: str = "symmetric"
    noise_rate: float = 0.4
    noise_mode: str = "replace"
    noise_exact: bool = False
    method: str = "sam"
    method_params: dict = field(default_factory=dict)
    rho: Optional[float] = None
    mixup_alpha: Optional[float] = None
    model: Optional[str] = None
    model_params: dict = field(default_factory=dict)
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    momentum: float = 0.9
    nesterov: Optional[bool] = None
    weight_decay: Optional[float] = None
    schedule: Optional[str] = None
    warmup_epochs: Optional[int] = None
    augment: Optional[bool] = None
    padding_mode: Optional[str] = None
    cutout: int = 0
    val_fraction: float = 0.1
    val_labels: str = "noisy"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    eval_batch_size: int = 128
    workers: int = 0
    profile: str = "cpu"
    sam_sync: str = "none"
    sync_bn: bool = False
    out: Optional[str] = None
    resume: bool = False

    def resolved(self) -> "TrainConfig":
        """Validate and fill the ``None`` fields from the profile; ``rho`` stays as given (it depends on the
        labels' noise rate: :func:`method_radius`), ``rho``/``mixup_alpha`` only for methods that take them."""
        _validate(self)
        for name, param in METHOD_FIELDS.items():
            value = getattr(self, name)
            require(value is None or takes_param(self.method, param),
                   f"{name} is given ({value}) but method {self.method!r} takes no {param}; methods that take "
                   f"it: {sorted(m for m in METHODS if takes_param(m, param))}")
            require(value is None or param not in self.method_params,
                   f"{name} is given twice: {name}={value} and method_params {param}={self.method_params.get(param)}")
        profile = PROFILES[self.profile]
        derived = ("model_params", "rho")  # not copied as they stand: model_params by the rule below, rho later
        fill = {k: v for k, v in profile.items() if k not in derived and getattr(self, k) is None}
        if self.model is None:  # the profile's model comes with its options; the user's given ones win
            fill["model_params"] = {**profile.get("model_params", {}), **self.model_params}
        return dataclasses.replace(self, **fill)

    def with_settings(self, **settings: Any) -> "TrainConfig":
        """A copy with ``settings`` (field name -> value) replaced; ValueError naming a name that is no field (with
        the closest field, and where the process's threads are set for ``threads``), not dataclasses' TypeError."""
        names = [f.name for f in dataclasses.fields(self)]
        for name in settings:
            if name not in names:
                hint = did_you_mean(name, names) or (
                    "; threads belong to the process: torch.set_num_threads(n)" if name == "threads" else "")
                raise ValueError(f"unknown run setting {name!r}{hint}")
        return dataclasses.replace(self, **settings)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _validate(c: TrainConfig) -> None:
    """Boundary checks: every field against CONFIG_PARAMS (type first, then range), then what the machine offers."""
    CONFIG_PARAMS.check({f.name: getattr(c, f.name) for f in dataclasses.fields(c)})
    require(c.sam_sync == "none" or c.method_params.get("m") is None,
           f"sam_sync 'grad' is plain SAM over the global batch and takes no m-sharpness chunks, got m="
           f"{c.method_params.get('m')}")
    if c.device != "auto":
        check_device(c.device)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX tiles). oneDNN also runs bf16 on a CPU
    with plain AVX-512 (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is true there), but by emulation: the
    CPU profile's CNN trains 2.5x slower in bf16 than in fp32 there (docs/benchmarks.md)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def amp_choice(amp: str, device: torch.device) -> tuple[Optional[torch.dtype], str]:
    """The autocast dtype for ``amp`` on ``device`` (None: fp32) and why, in words (recorded in config.json).
    "auto" picks the faster precision: bf16 on CUDA where the GPU has it (else fp16), bf16 on a CPU with native
    bf16 (:func:`native_bf16_cpu`), fp32 on every other CPU and device."""
    if amp != "auto":
        return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp], f"asked for ({amp})"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: bf16, this GPU has it"
        return torch.float16, "auto: fp16, this GPU has no bf16"
    if device.type == "cpu":
        if native_bf16_cpu():
            return torch.bfloat16, "auto: bf16, this CPU has native bf16 (AVX-512 BF16 or AMX)"
        return None, "auto: fp32, this CPU has no native bf16 (no AVX-512 BF16 or AMX), where bf16 runs slower"
    return None, f"auto: fp32 on {device.type}"


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of :func:`amp_choice` (None: fp32)."""
    return amp_choice(amp, device)[0]


def build_method(cfg: TrainConfig, labels: Optional[NoisyLabels] = None) -> Any:
    """The config's method with ``method_params``, its radius from :func:`method_radius` (the profile's at the
    noise rate of ``labels``), the config's ``mixup_alpha``, and for a method that needs the noise rate (its record's
    ``noise_rate_param``, co-teaching's ``tau``) that parameter, where not given, set to the share of wrong labels in
    ``labels`` (the config's ``noise_rate`` without labels); raises ValueError for parameters it does not take."""
    params = {param: getattr(cfg, name) for name, param in METHOD_FIELDS.items() if getattr(cfg, name) is not None}
    radius = method_radius(cfg, labels)
    if radius is not None and radius["source"] == "profile":
        params["rho"] = radius["value"]
    needs = method_info(cfg.method).noise_rate_param
    if needs is not None and cfg.method_params.get(needs) is None:
        params[needs] = labels.rate if labels is not None else cfg.noise_rate
    return get_method(cfg.method, **{**params, **cfg.method_params})


def method_stages(method: Any) -> int:
    """How many times a run of ``method`` trains its network from scratch: 2 for relabel-and-retrain (the SAM paper's
    bootstrap: the first model's predictions become the second's labels), else 1. A run's epochs are per stage."""
    return 2 if getattr(method, "relabel", False) else 1
