"""Data-parallel training (noisysam.distributed): 2 CPU processes on the gloo backend, compared with one process.

SAM steps under DDP are checked against single-process ``sam_step`` with the m-sharpness they stand for
(sync none: m = B/2; m given: the same m on the whole batch; sync grad: plain SAM), SGD against SGD, in float64
on a tiny MLP; a 2-process train() killed after its first checkpoint resumes (through ``noisysam train --nproc
2``) to the weights of an uninterrupted 2-process run. Each group of processes is started once per module.
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

from noisysam.cli import cli
from noisysam.distributed import Distributed
from noisysam.files import load_checkpoint
from noisysam.methods import get_method
from noisysam.train import TrainConfig, train

WORLD, BATCH, STEPS = 2, 8, 3
CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent

# name: (BatchNorm in the model, method, its parameters, sam_sync)
SCENARIOS = {
    "sam-none": (True, "sam", {"rho": 0.1}, "none"),
    "sam-m2": (True, "sam", {"rho": 0.1, "m": 2}, "none"),
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
    return [(torch.randn(BATCH, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (BATCH,), generator=g))
            for _ in range(STEPS)]


def run_steps(bn, method_name, params, ctx):
    """STEPS steps of a method, the way train() takes them: each rank its shard, through the wrapped model."""
    model = mlp(bn)
    method = get_method(method_name, **params)
    optimizer = method.make_optimizer(model.named_parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    plain, net = ctx.wrap(model)
    for x, y in batches():
        x, y = ctx.shard(x, y)
        method.train_step(net, optimizer, x, y, torch.arange(len(y)), generator=torch.Generator())
    return {k: v.detach().clone() for k, v in plain.named_parameters()}


def _steps_rank(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {name: run_steps(bn, method, params, Distributed(rank, WORLD, CPU, sync))
                   for name, (bn, method, params, sync) in SCENARIOS.items()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_steps(tmp_path_factory):
    """Each scenario's parameters after STEPS steps on 2 processes, per rank."""
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_steps_rank, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def single(bn, method, params):
    return run_steps(bn, method, params, Distributed())


def assert_params_close(a, b, atol=1e-9):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_ranks_hold_the_same_weights(ddp_steps):
    for name in SCENARIOS:
        assert_params_close(ddp_steps[0][name], ddp_steps[1][name], atol=0)


def test_sync_none_is_single_process_sam_with_m_the_per_rank_batch(ddp_steps):
    """Each rank climbs with its own gradient (BatchNorm over its own shard, as over an m-chunk in one process)."""
    ddp = ddp_steps[0]["sam-none"]
    assert_params_close(ddp, single(True, "sam", {"rho": 0.1, "m": BATCH // WORLD}))
    # ... which is not plain SAM on the whole batch: the test can tell the two apart
    assert max_diff(ddp, single(True, "sam", {"rho": 0.1})) > 1e-4


def test_m_chunks_do_not_depend_on_the_number_of_processes(ddp_steps):
    assert_params_close(ddp_steps[0]["sam-m2"], single(True, "sam", {"rho": 0.1, "m": 2}))


def test_sync_grad_is_plain_sam_on_the_whole_batch(ddp_steps):
    """No BatchNorm here: per-rank batch statistics would make even the first gradient differ from the whole
    batch's (that is what --sync-bn is for, on CUDA)."""
    ddp = ddp_steps[0]["sam-grad"]
    assert_params_close(ddp, single(False, "sam", {"rho": 0.1}))
    assert max_diff(ddp, single(False, "sam", {"rho": 0.1, "m": BATCH // WORLD})) > 1e-4


def test_ddp_sgd_is_single_process_sgd(ddp_steps):
    assert_params_close(ddp_steps[0]["sgd-no-bn"], single(False, "sgd", {}))


def test_ddp_sgd_with_batchnorm_normalises_per_rank(ddp_steps):
    """With BatchNorm, DDP SGD is one process's SGD with the statistics of each half batch: the mean of the
    gradients of the two halves, each through its own batch statistics (the model's BatchNorm in train mode)."""
    model, loss = mlp(True), get_method("sgd").loss  # the method's loss: cross-entropy in float32
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for x, y in batches():
        optimizer.zero_grad()
        halves = zip(x.chunk(WORLD), y.chunk(WORLD))
        sum(loss(model(xh), yh) for xh, yh in halves).div(WORLD).backward()
        optimizer.step()
    assert_params_close(ddp_steps[0]["sgd"], dict(model.named_parameters()))


def test_shards_are_contiguous_slices_and_layouts_are_checked():
    x = torch.arange(12)
    assert [Distributed(r, 3).shard(x)[0].tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(ValueError, match="batch_size 6 must split evenly over 4 processes"):
        Distributed(0, 4).check(6, 96, None)
    with pytest.raises(ValueError, match=r"last batch \(2 of 50 training rows at batch_size 8\)"):
        Distributed(0, 4).check(8, 50, None)
    with pytest.raises(ValueError, match=r"m \(3\) must divide the per-process batch \(16 / 2 = 8\)"):
        Distributed(0, 2).check(16, 64, 3)
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        Distributed(0, 2, CPU, sync_bn=True).check(16, 64, None)
    Distributed(0, 2).check(16, 72, 4)  # 72 rows: 4 batches of 16 and one of 8, 4 per process
    with pytest.raises(ValueError, match="sam_sync 'grad' .* takes no m-sharpness chunks, got m=4"):
        TrainConfig(sam_sync="grad", method_params={"m": 4}).resolved()
    with pytest.raises(ValueError, match="sam_sync must be one of"):
        TrainConfig(sam_sync="all").resolved()


# ------------------------------------------------------------------------------ whole runs, killed and resumed

RUN = dict(model="cnn", model_params={"width": 4}, epochs=3, batch_size=40, augment=True, amp="none",
           method="sam", seed=0)  # tiny.npz: 180 training rows, 5 batches, the last of 20 (10 per process)


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
