"""The input contract (noisysam.core.params): every declared parameter of every public entry point refuses values
outside its table with one InvalidParameterError naming it, and accepts the table's boundary values.

Invalid values are generated from the table (as scikit-learn's ``generate_invalid_param_val`` does): wrong
types, a number as text, bool for a number and a number for a bool, just outside each bound, nan and inf.
A new parameter added to a table is covered here without a new test; a new table needs one entry in CALLS.
"""

import dataclasses
import functools
import math

import click
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import noisysam
from noisysam import data
from noisysam import methods
from noisysam.models import networks as models
from noisysam.noise import labels as noise
from noisysam.optim import variants
from noisysam.cli.commands import cli
from noisysam.core.params import (NONE, TABLES, ArrayLike, Boolean, HasAttrs, InstanceOf, Interval,
                                  InvalidParameterError, Options, ParamTable, PathLike, SubclassOf, Text,
                                  validate_params)
from noisysam.optim.sam import SAM, sam_step
from noisysam.run.config import CONFIG_PARAMS, TrainConfig

LABELS = np.arange(20) % 2


@functools.cache
def mini():
    return data.load_dataset("cifar10-mini")


def on_meta(make):
    """Build a model on the meta device: no memory or init cost, the parameter check runs all the same."""
    with torch.device("meta"):
        return make()


def sam_optimizer(model=None, **kw):
    model = model or nn.Linear(3, 2)
    return SAM(**{"params": model.parameters(), "base_optimizer": torch.optim.SGD, "lr": 0.1, **kw})


def one_sam_step(**kw):
    model = nn.Linear(3, 2)
    return sam_step(**{"optimizer": sam_optimizer(model), "model": model, "loss_fn": F.cross_entropy,
                       "inputs": torch.ones(4, 3), "targets": torch.tensor([0, 1, 0, 1]), **kw})


def register_and_forget(**kw):
    """register_method without leaving the registration behind."""
    kw = {"name": "params-test", "factory": methods.registry._sgd, **kw}
    try:
        methods.register_method(**kw)
    finally:
        methods.METHODS.pop(kw["name"], None)
        methods.SAM_RADIUS_METHODS.discard(kw["name"])


TENSORS = torch.utils.data.TensorDataset(torch.zeros(4, 3, 2, 2), torch.tensor([0, 1, 0, 1]))

# How to call each entry point with valid arguments, overridden by the test's one parameter.
CALLS = {
    "noisysam.optim.sam.SAM": sam_optimizer,
    "noisysam.optim.sam.sam_step": one_sam_step,
    "noisysam.methods.rules.LabelSmoothing": methods.LabelSmoothing,
    "noisysam.methods.rules.BootstrapLoss": lambda **kw: methods.BootstrapLoss(**{"beta": 0.8, **kw}),
    "noisysam.methods.rules.GeneralizedCrossEntropy": methods.GeneralizedCrossEntropy,
    "noisysam.methods.rules.MixupInputs": methods.MixupInputs,
    "noisysam.methods.rules.SAMUpdate": methods.SAMUpdate,
    **{f"noisysam.optim.variants.{c.__name__}": c for c in (
        variants.LookSAMUpdate, variants.RandomSAMUpdate, variants.AESAMUpdate, variants.MomentumSAMUpdate,
        variants.SAMOnUpdate, variants.NormPenaltyUpdate)},
    "noisysam.methods.registry.register_method": register_and_forget,
    "noisysam.methods.registry.MethodInfo": lambda **kw: methods.MethodInfo(**{"name": "t", "factory": methods.registry._sgd,
                                                                              **kw}),
    **{f"{f.__module__}.{f.__qualname__}": functools.partial(methods.get_method, name)
       for name, f in methods.METHODS.items()},
    **{f"noisysam.models.networks.{f.__name__}": (lambda f: lambda **kw: on_meta(lambda: f(**kw)))(f)
       for f in (models.ResNet32, models.PreActResNet18, models.WideResNet, models.SimpleCNN, models.PlainCNN,
                 models.wrn28_10)},
    "noisysam.models.networks.get_model": lambda **kw: on_meta(lambda: models.get_model(**{"name": "cnn", **kw})),
    "noisysam.run.config.TrainConfig": lambda **kw: TrainConfig(**kw).resolved(),
    "noisysam.noise.labels.NoisyLabels": lambda **kw: noise.NoisyLabels(**{
        "noisy": [0, 1, 1, 0], "clean": [0, 1, 0, 0], "num_classes": 2, **kw}),
    "noisysam.noise.labels.symmetric": lambda **kw: noise.symmetric(**{"labels": LABELS, "rate": 0.3, "seed": 0, **kw}),
    "noisysam.noise.labels.asymmetric": lambda **kw: noise.asymmetric(**{
        "labels": LABELS, "rate": 0.3, "seed": 0, "mapping": {0: 1}, **kw}),
    "noisysam.noise.labels.pairflip": lambda **kw: noise.pairflip(**{"labels": LABELS, "rate": 0.3, "seed": 0, **kw}),
    "noisysam.noise.labels.from_transition": lambda **kw: noise.from_transition(**{
        "labels": LABELS, "T": [[0.8, 0.2], [0.3, 0.7]], "seed": 0, **kw}),
    "noisysam.noise.labels.cifar10n": lambda **kw: noise.cifar10n(**{"dataset": mini(), "kind": "aggre", **kw}),
    "noisysam.noise.labels.cifar10n_annotators": lambda **kw: noise.cifar10n_annotators(**{"dataset": mini(), **kw}),
    "noisysam.noise.labels.make": lambda **kw: noise.make(**{"kind": "none", "labels": LABELS, "rate": 0.3, "seed": 0,
                                                     **kw}),
    "noisysam.data.loader.Loader": lambda **kw: data.Loader(**{
        "images": np.zeros((4, 6, 6, 3), np.uint8), "labels": [0, 1, 0, 1], "batch_size": 2, **kw}),
    "noisysam.data.datasets.ImageDataset": lambda **kw: data.ImageDataset(**{
        "name": "t", "x_train": np.zeros((4, 2, 2, 3), np.uint8), "y_train": [0, 1, 0, 1],
        "x_test": np.zeros((2, 2, 2, 3), np.uint8), "y_test": [0, 1], "classes": ["a", "b"], **kw}),
    "noisysam.data.datasets.load_dataset": lambda **kw: data.load_dataset(**{"name_or_path": "cifar10-mini", **kw}),
    "noisysam.data.streaming.DatasetLoader": lambda **kw: data.DatasetLoader(**{
        "dataset": TENSORS, "labels": [0, 1, 0, 1], "batch_size": 2, **kw}),
    "noisysam.data.streaming.DatasetPair": lambda **kw: data.DatasetPair(**{"train": TENSORS, "test": TENSORS, **kw}),
}


def invalid_values(constraints):
    """Values outside a parameter's constraints, each derived from one constraint (just past its bounds, the
    wrong type) and kept unless another constraint of the same parameter accepts it."""
    out = []
    for c in constraints:
        if isinstance(c, Interval):
            made = [True, np.False_, "1", object()]  # bool is not a number; a number as text is not one
            step = (lambda v, d: v + d) if c.kind is int else (lambda v, d: float(np.nextafter(v, d * math.inf)))
            for bound, closed, d in ((c.low, c.closed_low, -1), (c.high, c.closed_high, 1)):
                if bound is not None and not math.isinf(bound):
                    made.append(step(bound, d) if closed else bound)  # just outside
            if c.kind is int:
                inside = 1 if c.low is None else c.low + (1 if not c.closed_low else 0)
                made += [inside + 0.5, float(inside)]  # a float is not an int, even a whole one
            else:
                made += [math.nan] + [v for v in (math.inf, -math.inf)
                                      if not ((c.closed_high and v == c.high) or (c.closed_low and v == c.low))]
        elif isinstance(c, Options):
            made = [1, object()] + [str(v).upper() + "x" for v in c.values][:1] + ["not-an-option"]
        elif isinstance(c, Boolean):
            made = [1, 0, "yes", "True", None]
        elif c is NONE:
            made = []
        elif isinstance(c, (Text, PathLike)):
            made = ["", 3, b"bytes", None]
        elif isinstance(c, (InstanceOf, HasAttrs, SubclassOf)):
            made = ["text", 1.5, object()]
        elif isinstance(c, ArrayLike):
            made = ["abc", 3, {"a": 1}, None]
        else:
            raise AssertionError(f"no invalid values known for {type(c).__name__}: teach invalid_values")
        out += [v for v in made if not any(o.is_satisfied_by(v) for o in constraints if o is not c)]
    return out


def valid_boundaries(constraints):
    """Values every entry point must accept: closed bounds (or just inside open ones), each option, both bools."""
    out = []
    for c in constraints:
        if isinstance(c, Interval):
            for bound, closed, d in ((c.low, c.closed_low, 1), (c.high, c.closed_high, -1)):
                if bound is not None:
                    inside = bound + d if c.kind is int else float(np.nextafter(bound, d * math.inf))
                    out.append(bound if closed else inside)
        elif isinstance(c, Options):
            out += list(c.values)
        elif isinstance(c, Boolean):
            out += [True, False, np.True_]
        elif c is NONE:
            out.append(None)
    return out


PARAMETERS = [pytest.param(owner, name, id=f"{owner}-{name}") for owner, table in sorted(TABLES.items())
              for name in table.constraints]


def test_every_table_has_a_caller_and_every_config_field_a_constraint():
    assert set(TABLES) == set(CALLS)
    assert set(CONFIG_PARAMS.constraints) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_cli_option_types_agree_with_the_table():
    """click's types are for --help; where an option has a range or choices they must be the table's."""
    checked = 0
    for command in cli.commands.values():
        for param in command.params:
            if param.name not in CONFIG_PARAMS.constraints or not isinstance(param, click.Option):
                continue
            constraints = CONFIG_PARAMS.constraints[param.name]
            if isinstance(param.type, (click.IntRange, click.FloatRange)):
                c = next(c for c in constraints if isinstance(c, Interval))
                assert (param.type.min, param.type.max) == (c.low, c.high), param.name
                assert (param.type.min_open, param.type.max_open) == (
                    c.low is not None and not c.closed_low, c.high is not None and not c.closed_high), param.name
                assert isinstance(param.type, click.IntRange) == (c.kind is int), param.name
                checked += 1
            elif isinstance(param.type, click.Choice):
                c = next(c for c in constraints if isinstance(c, Options))
                assert set(param.type.choices) == set(c.values), param.name
                checked += 1
    assert checked >= 20


@pytest.mark.parametrize("owner, name", PARAMETERS)
def test_every_parameter_refuses_values_outside_its_table_and_accepts_its_boundaries(owner, name):
    constraints = TABLES[owner].constraints[name]
    invalid = invalid_values(constraints)
    assert invalid, "nothing generated: the test would pass vacuously"
    for value in invalid:
        with pytest.raises(InvalidParameterError) as e:
            CALLS[owner](**{name: value})
        message = str(e.value)
        assert message.startswith(f"{name} must be "), (value, message)
        assert message.endswith(f"({type(value).__name__})"), (value, message)
    for value in valid_boundaries(constraints):
        try:
            CALLS[owner](**{name: value})
        except ValueError as e:  # other parameters' checks (e.g. classes vs labels) may object; this one must not
            assert not str(e).startswith(f"{name} must be "), (value, e)


# ------------------------------------------------------------------------------------ the constraints

@pytest.mark.parametrize("constraint, text, inside, outside", [
    (Interval(float, 0, closed="neither"), "a finite float > 0", [1e-300, 2, 1e300], [0, -1e-300, math.inf, math.nan]),
    (Interval(float, 0), "a finite float >= 0", [0, 0.0, np.float32(3)], [-0.0001, math.inf, True, "0.5"]),
    (Interval(float, 1, math.inf, closed="right"), "a float > 1 (inf allowed)", [1.0001, math.inf], [1, -math.inf]),
    (Interval(float, 0, 1, closed="left"), "a float in [0, 1)", [0, 0.999], [1, 1.0, -0.1, math.nan]),
    (Interval(int, 1), "an integer >= 1", [1, np.int64(5), 10**30], [0, True, 2.0, 2.5, "3", None]),
    (Interval(int, 0, 10, closed="right"), "an integer in (0, 10]", [1, 10], [0, 11, np.bool_(True)]),
    (Options(("a", "b")), "one of 'a', 'b'", ["a", "b"], ["A", "c", 1, None]),
    (Options((1, 2)), "one of 1, 2", [1, 2], [True, 1.0, "1"]),  # type-strict: True == 1 in Python
    (Boolean(), "a bool", [True, False, np.True_], [1, 0, "yes", None]),
    (Text(r"cpu|cuda(:\d+)?", "a device"), "a device", ["cpu", "cuda:1"], ["cuda:", "CPU", "", 1]),
    (ArrayLike(), "an array-like (list, tuple, numpy array or tensor)", [[1], (1,), np.zeros(2), torch.ones(2)],
     ["12", 3, np.int64(3), {"a": 1}, None]),
])
def test_a_constraint_checks_type_then_range_and_describes_itself(constraint, text, inside, outside):
    assert str(constraint) == text
    assert all(constraint.is_satisfied_by(v) for v in inside)
    assert not any(constraint.is_satisfied_by(v) for v in outside)


def test_the_message_names_the_parameter_what_is_allowed_and_what_was_given():
    table = ParamTable("t", dict(rho=Interval(float, 0, closed="neither"), m=[Interval(int, 1), None]))
    with pytest.raises(InvalidParameterError) as e:
        table.check(dict(rho="a"))
    assert str(e.value) == "rho must be a finite float > 0, got 'a' (str)"
    with pytest.raises(InvalidParameterError) as e:
        table.check(dict(rho=1.0, m=True))
    assert str(e.value) == "m must be an integer >= 1 or None, got True (bool)"
    assert isinstance(e.value, ValueError)
    table.check(dict(rho=1, m=None, other="anything"))  # undeclared names are not this table's business


def test_validate_params_refuses_an_undeclared_parameter_at_definition():
    def f(a, b=1):
        return a + b

    with pytest.raises(TypeError, match=r"undeclared \['b'\]"):
        validate_params(dict(a=Interval(int)))(f)
    with pytest.raises(TypeError, match=r"not parameters \['c'\]"):
        validate_params(dict(a=Interval(int), b=Interval(int), c=None))(f)
    checked = validate_params(dict(a=Interval(int), b=Interval(int, 0)), owner="test.f")(f)
    assert checked(2, b=3) == 5
    with pytest.raises(InvalidParameterError, match=r"^b must be an integer >= 0, got -1 \(int\)$"):
        checked(2, -1)
    del TABLES["test.f"]


# ------------------------------------------------------------ the cases the issue found, one by one

@pytest.mark.parametrize("field, value, message", [
    ("momentum", "0.9", "momentum must be a float in [0, 1), got '0.9' (str)"),
    ("device", None, "device must be one of 'auto' or 'cpu', 'mps' or 'cuda[:N]', got None (NoneType)"),
    ("val_fraction", "0.1", "val_fraction must be a float in [0, 1), got '0.1' (str)"),
    ("epochs", True, "epochs must be an integer >= 1 or None, got True (bool)"),  # trained one epoch before
    ("noise_rate", math.nan, "noise_rate must be a float in [0, 1], got nan (float)"),
    ("lr", math.inf, "lr must be a finite float >= 0 or None, got inf (float)"),
])
def test_train_refuses_bad_config_values_before_writing_anything(tmp_path, field, value, message):
    out = tmp_path / "run"
    with pytest.raises(InvalidParameterError) as e:
        noisysam.train(**{field: value}, out=str(out))
    assert str(e.value) == message
    assert not out.exists()


def test_sam_refuses_what_it_accepted_or_crashed_on():
    for kw, message in [
        (dict(rho="a"), "rho must be a finite float >= 0, got 'a' (str)"),  # TypeError from a comparison before
        (dict(rho=math.inf), "rho must be a finite float >= 0, got inf (float)"),  # accepted before
        (dict(adaptive="yes"), "adaptive must be a bool, got 'yes' (str)"),  # accepted before
        (dict(p=1), "p must be a float > 1 (inf allowed), got 1 (int)"),
        (dict(max_grad_norm=True), "max_grad_norm must be a finite float > 0 or None, got True (bool)"),
    ]:
        with pytest.raises(InvalidParameterError) as e:
            sam_optimizer(**kw)
        assert str(e.value) == message
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(InvalidParameterError, match=r"^adaptive must be a bool, got 1 \(int\)$"):
        SAM([{"params": [p], "adaptive": 1}], torch.optim.SGD, lr=0.1)  # per group, too
    opt = sam_optimizer()
    with pytest.raises(InvalidParameterError, match=r"^rho must be a finite float >= 0, got inf \(float\)$"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "rho": math.inf})
    assert sam_optimizer(p=math.inf, rho=0).p == math.inf  # the closed ends are in


def test_a_model_option_of_the_wrong_type_is_refused_before_torch_sees_it(tiny_npz, tmp_path):
    with pytest.raises(InvalidParameterError, match=r"^width must be an integer >= 1, got 2.5 \(float\)$"):
        models.get_model("cnn", width=2.5)
    out = tmp_path / "run"
    for option, message in [("--model-param", "width must be an integer >= 1, got 2.5 (float)"),
                            ("--method-param", "rho must be a finite float > 0, got 'abc' (str)"),
                            ("--rho", "rho must be a finite float > 0 or None, got inf (float)")]:
        value = {"--model-param": "width=2.5", "--method-param": "rho=abc", "--rho": "inf"}[option]
        r = CliRunner().invoke(cli, ["train", "--dataset", tiny_npz, "--method", "sam", "--epochs", "1",
                                     "--out", str(out), option, value], catch_exceptions=False)
        assert (r.exit_code, r.stderr, r.stdout) == (2, f"error: {message}\n", ""), option
        assert not out.exists()
