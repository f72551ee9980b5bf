"""`noisysam sweep`: the SAM paper's hyperparameter search (choice per rate on validation accuracy only),
its grid (resumable like the table) and `table --params-from`."""

import json
import statistics

import pytest
from click.testing import CliRunner

from noisysam.grid import cells as grid_cells, sweep
from noisysam.cli.commands import cli
from noisysam.core.files import write_json
from noisysam.run.config import TrainConfig

TINY = ["--epochs", "1", "--model-param", "width=4", "--batch-size", "50", "--amp", "none", "--no-plot"]

# Fabricated last-epoch accuracies (fractions) per (rate, (rho, m)): (validation per seed, test per seed).
# At 60% validation prefers rho=0.05, m=8 (mean 57.0) while test prefers rho=0.05, m=16: the choice must
# follow validation. At 40% rho=0.1 with m=16 and m=8 tie at 45.0 (0.45, 0.45 and 0.30, 0.60):
# the one listed first wins.
FAKE = {
    (0.6, (0.05, 16)): ([0.50, 0.60], [0.90, 0.92]),
    (0.6, (0.05, 8)): ([0.58, 0.56], [0.30, 0.32]),
    (0.6, (0.1, 16)): ([0.57, 0.56], [0.50, 0.50]),
    (0.6, (0.1, 8)): ([0.40, 0.40], [0.80, 0.80]),
    (0.4, (0.05, 16)): ([0.40, 0.41], [0.95, 0.95]),
    (0.4, (0.05, 8)): ([0.44, 0.40], [0.95, 0.95]),
    (0.4, (0.1, 16)): ([0.45, 0.45], [0.60, 0.60]),
    (0.4, (0.1, 8)): ([0.30, 0.60], [0.70, 0.70]),
}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def fake_result(seed, val, test):
    return dict(method="sam", dataset="tiny", model="cnn", seed=seed, epochs=1, profile="cpu",
                noise=dict(type="symmetric", mode="replace", rate=0.6, realised_rate=0.6),
                test_accuracy=dict(last=test, best=test, best_epoch=1, selected=test, selected_epoch=1,
                                   selected_by="clean-validation accuracy"),
                memorisation_last=None, recovery_last=None, noise_auroc_last=None, stage1=None, wall_seconds=1.0,
                device="cpu", amp="fp32", val_accuracy_last=val)


@pytest.fixture
def fabricated(tmp_path):
    """A finished sweep of sam's rho x m at 60% and 40% noise, seeds 0 and 1, from FAKE (no training)."""
    spec = sweep.Sweep("sam", {"rho": [0.05, 0.1], "m": [16, 8]}, [0.6, 0.4], [0, 1])
    root = tmp_path / "sweep"
    cells = spec.cells(root)
    for cell in cells:
        p = dict(cell.params)
        val, test = FAKE[(cell.rate, (p["rho"], p["m"]))]
        write_json(cell.dir / "result.json", fake_result(cell.seed, val[cell.seed], test[cell.seed]))
    return spec, root, cells


def test_choice_per_rate_follows_mean_validation_accuracy_not_the_test_set(fabricated):
    spec, root, cells = fabricated
    assert [str(c.dir.relative_to(root)) for c in cells[:3]] == [
        "sam/rho=0.05,m=16/rate0.6/seed0", "sam/rho=0.05,m=16/rate0.6/seed1", "sam/rho=0.05,m=16/rate0.4/seed0"]
    content = sweep.write_sweep(root, spec, cells)
    assert [(c["rate"], c["params"]) for c in content["choices"]] == [
        (0.6, {"rho": 0.05, "m": 8}), (0.4, {"rho": 0.1, "m": 16})]
    by_key = {(r["rate"], r["name"]): r for r in content["rows"]}
    assert len(by_key) == 8
    for (rate, (rho, m)), (val, test) in FAKE.items():
        row = by_key[(rate, f"rho={rho!r},m={m}")]
        assert row["val_mean"] == pytest.approx(100 * statistics.mean(val))
        assert row["val_std"] == pytest.approx(100 * statistics.stdev(val))
        assert row["test_mean"] == pytest.approx(100 * statistics.mean(test))
        assert row["seeds"] == [0, 1]
    # The same rows with the test accuracies swapped around choose the same: the test set plays no part.
    shuffled = [dict(r, test_mean=100 - r["test_mean"]) for r in content["rows"]]
    assert [c["name"] for c in sweep.choose(shuffled)] == [c["name"] for c in content["choices"]]

    saved = json.loads((root / "sweep.json").read_text())
    assert saved["choices"] == json.loads(json.dumps(content["choices"]))
    assert saved["params"] == {"rho": [0.05, 0.1], "m": [16, 8]} and saved["select"] == "clean"
    md = (root / "sweep.md").read_text()
    assert "| **0.05** | **8** | **57.0 ± 1.4** | 31.0 ± 1.4 |" in md  # 0.58/0.56 and 0.30/0.32, by hand
    assert sweep.read_choices(root)["choices"] == {0.6: {"rho": 0.05, "m": 8}, 0.4: {"rho": 0.1, "m": 16}}


def test_selection_needs_every_cell_finished(fabricated):
    spec, root, cells = fabricated
    (cells[-1].dir / "result.json").unlink()
    with pytest.raises(ValueError, match="has not finished"):
        sweep.write_sweep(root, spec, cells)
    assert not (root / "sweep.json").exists()


@pytest.mark.parametrize("method, params, message", [
    ("sam", {"q": [1]}, "method 'sam' takes no parameter 'q'"),
    ("sam", {"lr": [0.1]}, "method 'sam' takes no parameter 'lr'"),
    ("sgd", {"rho": [0.1]}, "method 'sgd' takes no parameter 'rho'"),
    ("sam", {"rho": [0.1, -1.0]}, "rho must be a finite float > 0 or None, got -1.0"),
    ("sam", {"m": [16, 0]}, "m must be an integer >= 1 or None, got 0"),
    ("sam", {"m": [1.5]}, "m must be an integer >= 1 or None, got 1.5"),
    ("sam", {"rho": [0.1, 0.1]}, "rho has the value 0.1 twice"),
    ("sam", {"rho": []}, "rho needs at least one value"),
    ("sam", {}, "params must name at least one parameter"),
    ("mixup", {"alpha": [1], "mixup_alpha": [8]}, "mixup_alpha and alpha are one parameter"),
    ("bootstrap", {"mode": ["soft", "a/b"]}, "must be numbers, booleans, null or plain words"),
])
def test_bad_parameters_are_refused(method, params, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        sweep.Sweep(method, params, [0.6], [0])


def test_select_sets_the_validation_labels():
    spec = sweep.Sweep("mixup", {"mixup_alpha": [1, 8, 16, 32]}, [0.6], [0], select="noisy")
    assert spec.config(TrainConfig(val_labels="clean")).val_labels == "noisy"
    assert sweep.Sweep("mixup", {"alpha": [1]}, [0.6], [0]).config(TrainConfig()).val_labels == "clean"
    with pytest.raises(ValueError, match="val_fraction must be > 0"):
        spec.config(TrainConfig(val_fraction=0.0))
    assert [c.params for c in spec.cells("r")] == [(("mixup_alpha", v),) for v in (1, 8, 16, 32)]


@pytest.mark.parametrize("bad", [
    ["--param", "q=1"], ["--param", "rho="], ["--param", "rho=0.1,0.1"], ["--param", "rho=-1"], ["--param", "rho"],
    ["--param", "rho=0.1", "--param", "rho=0.2"], ["--param", "rho=0.1", "--rho", "0.2"],
    ["--param", "m=8", "--method", "sgd"], ["--param", "rho=0.1", "--val-fraction", "0"],
])
def test_cli_bad_input_exits_2_with_one_line_before_anything_is_written(tiny_npz, tmp_path, bad):
    root = tmp_path / "sweep"
    r = run("sweep", "--dataset", tiny_npz, "--rates", "0.6", "--seeds", "0", "--out", root, *TINY, *bad)
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, (bad, r.output)
    assert not root.exists()


def test_values_that_depend_on_each_other_are_checked_per_combination():
    """bootstrap's beta is only allowed with mode soft or hard: checked with the swept and the fixed mode."""
    assert sweep.Sweep("bootstrap", {"mode": ["soft", "hard"], "beta": [0.5, 0.8]}, [0.6], [0]).combos() == [
        {"mode": "soft", "beta": 0.5}, {"mode": "soft", "beta": 0.8},
        {"mode": "hard", "beta": 0.5}, {"mode": "hard", "beta": 0.8}]
    assert sweep.Sweep("bootstrap", {"beta": [0.5, 0.8]}, [0.6], [0], fixed={"mode": "soft"}).params == {
        "beta": [0.5, 0.8]}
    for params, fixed in (({"beta": [0.5]}, {}), ({"mode": ["soft", "relabel"], "beta": [0.5]}, {})):
        with pytest.raises(ValueError, match="beta applies to mode 'soft' or 'hard' only"):
            sweep.Sweep("bootstrap", params, [0.6], [0], fixed=fixed)


def test_a_config_file_gives_the_values_as_arrays(tiny_npz, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text('rates = [0.6]\nparams = {rho = [0.1, -1.0], m = [8]}\n')
    r = run("sweep", "--config", config, "--dataset", tiny_npz, "--out", tmp_path / "sweep", *TINY)
    assert r.exit_code == 2 and "rho must be a finite float > 0 or None, got -1.0" in r.stderr, r.output
    assert not (tmp_path / "sweep").exists()


def test_a_tiny_sweep_trains_resumes_and_feeds_the_table(tiny_npz, tmp_path):
    root = tmp_path / "sweep"
    args = ["sweep", "--dataset", tiny_npz, "--method", "sam", "--param", "rho=0.05,0.5", "--rates", "0.6",
            "--seeds", "0", "--out", root, *TINY]
    r = run(*args)
    assert r.exit_code == 0, r.output
    results = {rho: root / f"sam/rho={rho}/rate0.6/seed0/result.json" for rho in (0.05, 0.5)}
    val = {}
    for rho, path in results.items():
        config = json.loads((path.parent / "config.json").read_text())["config"]
        assert (config["rho"], config["val_labels"], config["noise_rate"]) == (rho, "clean", 0.6)
        val[rho] = json.loads(path.read_text())["val_accuracy_last"]
    saved = json.loads((root / "sweep.json").read_text())
    assert {r["params"]["rho"]: r["val_mean"] for r in saved["rows"]} == pytest.approx(
        {rho: 100 * v for rho, v in val.items()})
    best = 0.05 if val[0.05] >= val[0.5] else 0.5  # ties: the value listed first
    assert saved["choices"][0]["params"] == {"rho": best}

    mtimes = {p: p.stat().st_mtime_ns for p in results.values()}
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert r.stdout.count("already finished") == 2
    assert {p: p.stat().st_mtime_ns for p in results.values()} == mtimes

    # The table takes the choice for sam at 60%; a rate the sweep lacks is refused before anything is written.
    grid_root = tmp_path / "table"
    base = ["table", "--dataset", tiny_npz, "--methods", "sgd,sam", "--seeds", "0", "--out", grid_root, *TINY]
    r = run(*base, "--rates", "0.4,0.6", "--params-from", root)
    assert r.exit_code == 2 and "no choice for noise rate 0.4" in r.stderr and r.stderr.count("\n") == 1
    assert not grid_root.exists()
    # A choice made under other settings (here weight decay) is not carried over: refused, nothing written.
    r = run(*base, "--rates", "0.6", "--params-from", root, "--weight-decay", "0.001")
    assert r.exit_code == 2 and "weight_decay 0.0005 there, 0.001 here" in r.stderr and r.stderr.count("\n") == 1, \
        r.output
    assert not grid_root.exists()
    r = run(*base, "--rates", "0.6", "--params-from", root)
    assert r.exit_code == 0, r.output
    config = json.loads((grid_root / "sam/rate0.6/seed0/config.json").read_text())["config"]
    assert config["rho"] == best
    assert json.loads((grid_root / "sgd/rate0.6/seed0/config.json").read_text())["config"]["rho"] is None
    record = {"sam": {"sweep": str(root), "choices": {"0.6": {"rho": best}}}}
    assert json.loads((grid_root / "params_from.json").read_text()) == record
    assert json.loads((grid_root / "table.json").read_text())["params_from"] == record
    # Without the sweep the same table directory holds sam cells trained with another rho: refused.
    r = run(*base, "--rates", "0.6")
    assert r.exit_code == 2 and "different settings (['rho'])" in r.stderr


def test_table_params_from_applies_the_choice_per_rate_and_refuses_conflicts(fabricated, tiny_npz, tmp_path):
    spec, root, cells = fabricated
    sweep.write_sweep(root, spec, cells)
    grid_root = tmp_path / "table"
    base = ["table", "--dataset", tiny_npz, "--seeds", "0", "--out", grid_root, *TINY]
    for bad, message in ((["--methods", "sam", "--rates", "0.6", "--params-from", root, "--params-from", root],
                          "two sweeps of method 'sam'"),
                         (["--methods", "sgd", "--rates", "0.6", "--params-from", root],
                          "tunes method 'sam', which the table does not train"),
                         (["--methods", "sam", "--rates", "0.6", "--params-from", root, "--method-param", "m=4"],
                          "m given for the whole grid and for cell")):
        r = run(*base, *bad)
        assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.output
        assert not grid_root.exists()
    cells = grid_cells.grid(grid_root, ["sam"], [0.6, 0.4], [0])
    tuned, used = sweep.tuned(cells, [root])
    assert [c.dir for c in tuned] == [c.dir for c in cells]  # the table's layout
    assert [grid_cells.cell_config(TrainConfig(), c).method_params for c in tuned] == [{"m": 8}, {"m": 16}]
    assert [grid_cells.cell_config(TrainConfig(), c).rho for c in tuned] == [0.05, 0.1]
    assert used == {"sam": {"sweep": str(root), "choices": {"0.6": {"rho": 0.05, "m": 8},
                                                            "0.4": {"rho": 0.1, "m": 16}}}}


def test_sweep_plot_draws_validation_and_test_against_each_parameter(fabricated):
    pytest.importorskip("matplotlib")
    spec, root, cells = fabricated
    content = sweep.write_sweep(root, spec, cells)
    from noisysam.report.plots import plot_sweep, sweep_figure

    fig = sweep_figure(content)
    assert len(fig.axes) == 4  # 2 rates x 2 parameters
    rho_at_60 = fig.axes[0]
    lines = [line for line in rho_at_60.get_lines() if len(line.get_xdata())]
    by_style = {(line.get_linestyle(), line.get_label()): list(line.get_ydata()) for line in lines}
    # m=16: rho 0.05 then 0.1; validation solid, test dashed (FAKE's means in %).
    assert by_style[("-", "m=16")] == pytest.approx([55.0, 56.5])
    assert by_style[("-", "m=8")] == pytest.approx([57.0, 40.0])
    dashed = [y for line in lines if line.get_linestyle() == "--" for y in line.get_ydata()]
    assert dashed == pytest.approx([91.0, 50.0, 31.0, 80.0])  # m=16, then m=8
    [star] = [line for line in lines if line.get_marker() == "*"]
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([0], pytest.approx([57.0]))
    assert plot_sweep(root, content) == root / "sweep.png" and (root / "sweep.png").stat().st_size > 1000
