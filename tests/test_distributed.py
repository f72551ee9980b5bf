"""Data-parallel training (noisysam.run.distributed): 2 CPU processes on the gloo backend, compared with one process.

SAM steps under DDP are checked against single-process ``sam_step`` with the m-sharpness they stand for
(sync none: m = the first rank's shard; m given: the same m on the whole batch; sync grad: plain SAM), SGD
against SGD, in float64 on a tiny MLP, on batches that split unevenly over the 2 processes; a 2-process train()
takes the same steps and reports the same mean loss as one process on a model without BatchNorm; a 2-process
train() killed after its first checkpoint resumes (through ``noisysam train --nproc 2``) to the weights of an
uninterrupted 2-process run. A layout that leaves a process 1 row is refused. Each group of processes is
started once per module, except for the kill.
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from click.testing import CliRunner
from torch import nn

from noisysam.cli.commands import cli
from noisysam.data.datasets import load_dataset
from noisysam.run.distributed import Distributed
from noisysam.core.files import load_checkpoint
from noisysam.methods.registry import get_method
from noisysam.optim.sam import sam_step
from noisysam.run.config import PROFILES, TrainConfig
from noisysam.run.loop import _split, train

# The 11-row batch splits over 2 processes into 6 + 5 rows; with m = 3 into chunks 3, 3 | 3, 2, and the 8-row
# batches into 3, 3 | 2 (chunks 3, 3, 2): unequal shards and unequal numbers of chunks.
WORLD, SIZES = 2, (8, 11, 8)
CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent

# name: (BatchNorm in the model, method, its parameters, sam_sync)
SCENARIOS = {
    "sam-none": (True, "sam", {"rho": 0.1}, "none"),
    "sam-m3": (True, "sam", {"rho": 0.1, "m": 3}, "none"),
    "sam-grad": (False, "sam", {"rho": 0.1}, "grad"),
    "sgd": (True, "sgd", {}, "none"),
    "sgd-no-bn": (False, "sgd", {}, "none"),
}


def mlp(bn):
    torch.manual_seed(0)
    layers = [nn.Linear(5, 6)] + ([nn.BatchNorm1d(6)] if bn else []) + [nn.ReLU(), nn.Linear(6, 3)]
    return nn.Sequential(*layers).double()


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
            for n in SIZES]


def run_steps(bn, method_name, params, ctx):
    """A step of a method per batch, the way train() takes them: each rank its shard, through the wrapped model.
    Returns the parameters and each step's mean loss over the ranks, each rank's weighted by its share."""
    model = mlp(bn)
    method = get_method(method_name, **params)
    optimizer = method.make_optimizer(model.named_parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    plain, net = ctx.wrap(model)
    losses = []
    for x, y in batches():
        x, y = ctx.shard(x, y, m=params.get("m"))
        loss = method.train_step(net, optimizer, x, y, torch.arange(len(y)), generator=torch.Generator())
        losses.append(ctx.mean(loss * ctx.weight))
    return {k: v.detach().clone() for k, v in plain.named_parameters()}, torch.stack(losses)


def linear():
    """A model without BatchNorm for tiny.npz's 16x16 RGB images: its 2-process SGD is one process's."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 3, 10))


# train() on tiny.npz's 180 training rows at batch size 35: 5 batches of 35 rows (18 + 17 per process), one of 5
# (3 + 2); at batch size 59 the last batch has 3 rows, 2 + 1 per process.
TRAIN = dict(method="sgd", epochs=1, batch_size=35, augment=True, amp="none", seed=0)


def _steps_rank(rank, init_file, out_dir, dataset):
    """Each scenario's steps, then train() refused with batch size 59 (its message kept), then train() as
    TRAIN says, all in one process group."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {name: run_steps(bn, method, params, Distributed(rank, WORLD, CPU, sync))
                   for name, (bn, method, params, sync) in SCENARIOS.items()}
        try:
            train(dataset=dataset, model=linear(), out=os.path.join(out_dir, "refused"), **{**TRAIN, "batch_size": 59})
        except ValueError as e:
            results["refused"] = str(e)
        train(dataset=dataset, model=linear(), out=os.path.join(out_dir, "train"), **TRAIN)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, tiny_npz):
    """What 2 processes did (_steps_rank): per rank, each scenario's (parameters after the steps, the steps'
    losses) and the refusal's message; and the directory of the run they trained."""
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_steps_rank, args=(str(tmp / "init"), str(tmp), tiny_npz), nprocs=WORLD)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)], tmp


@pytest.fixture(scope="module")
def ddp_steps(two_processes):
    return two_processes[0]


def single(bn, method, params):
    return run_steps(bn, method, params, Distributed())


def sam_chunked_as_the_shards(bn):
    """One process's sam_step on each whole batch of n rows, in chunks of ceil(n / 2) rows: the two ranks'
    shards (torch.tensor_split's convention, the first takes the odd row). The parameters and the losses."""
    model = mlp(bn)
    method = get_method("sam", rho=0.1)
    optimizer = method.make_optimizer(model.named_parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    losses = [sam_step(optimizer, model, method.loss, x, y, m=-(-len(y) // WORLD)) for x, y in batches()]
    return {k: v.detach() for k, v in model.named_parameters()}, torch.stack(losses)


# The loss is computed in float32 (methods.CrossEntropy), so each row's gradient at the logits carries a relative
# rounding error of a few u = 2**-24 (6e-8), which the 2 processes and 1 round differently on an uneven split
# (the mean's 1/11 against 1/6 times the share 6/11; even splits round alike: 1/8 = 1/4 * 1/2). The gradients
# here are below 1 (0.62 at most); allowing their rows' terms to sum to 10 in magnitude, each step's gradient is
# off by < 10 * 4u = 2.4e-6, and lr 0.1 with momentum 0.9 moves the weights by at most 0.1 * (1 + 1.9 + 2.71)
# = 0.56 of that over the 3 steps: < 1.4e-6. (Measured: 3e-9; an unweighted mean is off by 2e-3 or more.)
ATOL = 1.4e-6


def assert_params_close(a, b, atol=ATOL):
    a, b = dict(a), dict(b)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def assert_steps_close(a, b):
    """Parameters to ATOL; the steps' mean losses to 24u relative: a float32 mean of n positive row losses is
    within n u of the exact one, so the 11-row mean and the 6- and 5-row means weighted and summed agree to
    (11 + 6 + 5 + 2)u."""
    assert_params_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], rtol=24 * 2 ** -24, atol=0)


def max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_ranks_hold_the_same_weights(ddp_steps):
    for name in SCENARIOS:
        assert_params_close(ddp_steps[0][name][0], ddp_steps[1][name][0], atol=0)
        assert torch.equal(ddp_steps[0][name][1], ddp_steps[1][name][1])


def test_sync_none_is_single_process_sam_with_m_the_per_rank_batch(ddp_steps):
    """Each rank climbs with its own gradient (BatchNorm over its own shard, as over an m-chunk in one process);
    the 11-row batch's shards of 6 and 5 rows weigh 6/11 and 5/11, as sam_step weighs its chunks."""
    ddp = ddp_steps[0]["sam-none"]
    assert_steps_close(ddp, sam_chunked_as_the_shards(True))
    # ... which is not plain SAM on the whole batch: the test can tell the two apart
    assert max_diff(ddp[0], single(True, "sam", {"rho": 0.1})[0]) > 1e-4


def test_m_chunks_do_not_depend_on_the_number_of_processes(ddp_steps):
    assert_steps_close(ddp_steps[0]["sam-m3"], single(True, "sam", {"rho": 0.1, "m": 3}))


def test_sync_grad_is_plain_sam_on_the_whole_batch(ddp_steps):
    """No BatchNorm here: per-rank batch statistics would make even the first gradient differ from the whole
    batch's (that is what --sync-bn is for, on CUDA)."""
    ddp = ddp_steps[0]["sam-grad"]
    assert_steps_close(ddp, single(False, "sam", {"rho": 0.1}))
    assert max_diff(ddp[0], sam_chunked_as_the_shards(False)[0]) > 1e-4


def test_ddp_sgd_is_single_process_sgd(ddp_steps):
    assert_steps_close(ddp_steps[0]["sgd-no-bn"], single(False, "sgd", {}))


def test_ddp_sgd_with_batchnorm_normalises_per_rank(ddp_steps):
    """With BatchNorm, DDP SGD is one process's SGD with the statistics of each shard: the mean of the shards'
    gradients weighted by their sizes, each through its own batch statistics (the model's BatchNorm in train mode)."""
    model, loss = mlp(True), get_method("sgd").loss  # the method's loss: cross-entropy in float32
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for x, y in batches():
        optimizer.zero_grad()
        shards = zip(x.tensor_split(WORLD), y.tensor_split(WORLD))
        sum(loss(model(xs), ys) * len(ys) for xs, ys in shards).div(len(y)).backward()
        optimizer.step()
    assert_params_close(ddp_steps[0]["sgd"][0], model.named_parameters())


def test_shards_split_batches_over_the_processes_by_whole_m_chunks():
    """tensor_split's shards without m (the first n mod W ranks take a row more); with m, runs of whole chunks
    (the first ranks a chunk more); a rank's weight is its share of the batch times the number of processes."""
    for n in (12, 11, 10):
        x = torch.arange(n)
        layouts = [Distributed(r, 3) for r in range(3)]
        assert [d.shard(x)[0].tolist() for d in layouts] == [s.tolist() for s in x.tensor_split(3)]
        assert [d.weight for d in layouts] == [len(s) * 3 / n for s in x.tensor_split(3)]
    # 8 rows in chunks of 3: (0 1 2) (3 4 5) | (6 7); 11 rows: (0 1 2) (3 4 5) | (6 7 8) (9 10)
    assert [Distributed(r, 2).shard(torch.arange(8), m=3)[0].tolist() for r in range(2)] == [[0, 1, 2, 3, 4, 5], [6, 7]]
    assert [Distributed(r, 2).shard(torch.arange(11), m=3)[0].tolist() for r in range(2)] == \
           [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert Distributed(1, 2).bounds(8, 3) == [0, 6, 8]
    assert Distributed().weight == Distributed(0, 3).weight == 1  # before any shard(): even shares


def test_layouts_are_checked():
    """Every process needs 2 rows of every batch; sync_bn needs even shards (and CUDA); nothing else is asked."""
    with pytest.raises(ValueError, match=r"batch_size 6 splits over 4 processes into shards of \[2, 2, 1, 1\] rows: "
                                         r"each process needs at least 2 rows of every batch"):
        Distributed(0, 4).check(6, 96, None)
    with pytest.raises(ValueError, match=r"last batch \(2 of 50 training rows at batch_size 8\) splits over 4 "
                                         r"processes into shards of \[1, 1, 0, 0\] rows"):
        Distributed(0, 4).check(8, 50, None)
    with pytest.raises(ValueError, match=r"last batch \(5 of 69 training rows at batch_size 16\) splits over 2 "
                                         r"processes in chunks of m=4 into shards of \[4, 1\] rows"):
        Distributed(0, 2).check(16, 69, 4)
    with pytest.raises(ValueError, match=r"batch_size 16 splits over 2 processes in chunks of m=16 into shards of "
                                         r"\[16, 0\] rows"):
        Distributed(0, 2).check(16, 64, 16)
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        Distributed(0, 2, CPU, sync_bn=True).check(16, 64, None)
    cuda = torch.device("cuda")  # a layout, not a device in use: check() asks nothing of CUDA
    with pytest.raises(ValueError, match=r"last batch \(7 of 71 .* \[4, 3\] rows: sync_bn needs even shards"):
        Distributed(0, 2, cuda, sync_bn=True).check(16, 71, None)
    Distributed(0, 2, cuda, sync_bn=True).check(16, 72, 4)  # 72 rows: 4 batches of 16 and one of 8, 4 per process
    Distributed(0, 2).check(16, 64, 3)  # chunks of 3 need not divide the shard: (3 3 3) (3 3 1) per batch
    Distributed(0, 3).check(16, 71, None)  # shards of 6 5 5, and of 3 2 2
    with pytest.raises(ValueError, match="sam_sync 'grad' .* takes no m-sharpness chunks, got m=4"):
        TrainConfig(sam_sync="grad", method_params={"m": 4}).resolved()
    with pytest.raises(ValueError, match="sam_sync must be one of"):
        TrainConfig(sam_sync="all").resolved()


def test_the_default_run_splits_over_two_processes():
    """``noisysam train`` on the embedded data with the cpu profile's batch size: its last batch, an odd number of
    rows (29 at the old batch 64, refused on 2 processes; 93 at 128), is split (47 + 46)."""
    rows = len(_split(len(load_dataset("cifar10-mini").y_train), TrainConfig.val_fraction, TrainConfig.seed)[0])
    batch = PROFILES[TrainConfig.profile]["batch_size"]
    last = rows % batch
    assert last % 2 == 1 and Distributed(0, 2).bounds(last) == [0, (last + 1) // 2, last]
    Distributed(0, 2).check(batch, rows, None)


def test_two_process_training_takes_one_process_steps_and_reports_its_loss(two_processes, tiny_npz, tmp_path):
    """train() on 2 processes (TRAIN): the weights and the epoch's mean training loss are one process's, to
    float32 rounding. Sums of up to 35 float32 terms differ by their order; the tolerances allow about 170 u
    (2**-24 each), 40 times what they measured or more. An unweighted mean over the processes (the last batch's
    shards weigh 3/5 and 2/5, not 1/2) was off by 3e-2 of the largest weight and 4e-4 of the loss."""
    one = train(dataset=tiny_npz, model=linear(), out=str(tmp_path / "one"), **TRAIN)
    two = load_checkpoint(two_processes[1] / "train" / "checkpoint.pt")
    assert two["world_size"] == WORLD
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(two["model"][k], v, atol=1e-5 * float(v.abs().max()), rtol=0, msg=k)
    assert two["history"][0]["train_loss"] == pytest.approx(one.history[0]["train_loss"], rel=1e-5)


def test_a_process_left_one_row_is_refused_before_anything_is_written(two_processes):
    """180 training rows at batch size 59 leave a last batch of 3 rows: 2 + 1 on 2 processes (the CLI prints
    such a ValueError as one line and exits 2)."""
    for rank in two_processes[0]:
        assert rank["refused"] == ("the epoch's last batch (3 of 180 training rows at batch_size 59) splits over 2 "
                                   "processes into shards of [2, 1] rows: each process needs at least 2 rows of every "
                                   "batch (BatchNorm in training mode normalises over them); choose another batch size")
    assert not (two_processes[1] / "refused").exists()


# ------------------------------------------------------------------------------ whole runs, killed and resumed

RUN = dict(model="cnn", model_params={"width": 4}, epochs=3, batch_size=47, augment=True, amp="none",
           method="sam", seed=0)  # tiny.npz: 180 training rows: 3 batches of 47 (24 + 23 rows per process), 1 of 39


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_after_first_epoch(event, info):
    if event == "epoch" and info["epoch"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, as a killed job


def _train_rank(rank, runs):
    """train() as torchrun would start it: the process group from the environment, one run after another."""
    torch.set_num_threads(1)
    for port, kwargs, kill in runs:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE=str(WORLD))
        train(callback=_kill_after_first_epoch if kill else None, **kwargs)


def test_killed_two_process_run_resumes_to_the_uninterrupted_weights(tiny_npz, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    runs = [(_free_port(), dict(dataset=tiny_npz, out=str(whole), **RUN), False),
            (_free_port(), dict(dataset=tiny_npz, out=str(killed), **RUN), True)]
    with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
        mp.spawn(_train_rank, args=(runs,), nprocs=WORLD)
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] == 1
    assert not (killed / "result.json").exists()

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "noisysam", "train", "--out", str(killed), "--resume", "--nproc",
                           str(WORLD), "--no-plot", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    a, b = (load_checkpoint(d / "checkpoint.pt") for d in (whole, killed))
    assert a["epoch"] == b["epoch"] == RUN["epochs"] and a["world_size"] == b["world_size"] == WORLD
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a["history"]] == \
           [{k: v for k, v in r.items() if k not in drop} for r in b["history"]]

    # Another world size is refused with one line, before anything is written.
    before = {str(p.relative_to(killed)): p.read_bytes() for p in killed.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="trained by 2 process.* this run has 1; resume it with --nproc 2"):
        train(out=str(killed), resume=True, **{**RUN, "dataset": tiny_npz})
    result = CliRunner().invoke(cli, ["train", "--out", str(killed), "--resume"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "trained by 2 process(es)" in result.stderr
    assert {str(p.relative_to(killed)): p.read_bytes() for p in killed.rglob("*") if p.is_file()} == before
