"""The paper-table grid: runs cells, skips finished ones on re-run, aggregates over seeds, renders."""

import csv
import json

import pytest
from click.testing import CliRunner

from noisysam.grid import cells as grid_cells, paper as grid_paper, table
from noisysam.cli.commands import cli
from noisysam.methods.registry import get_method
from noisysam.run.config import PROFILES

TINY = ["--epochs", "1", "--model-param", "width=4", "--batch-size", "50", "--amp", "none", "--no-plot"]



def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_paper_numbers_are_table_4():
    assert grid_paper.paper_value("sgd", 0.8) == 26.2
    assert grid_paper.paper_value("bootstrap-sam", 0.4) == 94.2
    assert grid_paper.paper_value("sam", 0.3) is None and grid_paper.paper_value("gce", 0.2) is None
    assert grid_paper.PAPER_METHODS == tuple(grid_paper.PAPER_TABLE4)
    assert grid_paper.LITERATURE_TABLE4["MentorMix (Jiang et al. 2020)"] == (95.6, 94.2, 91.3, 81.0)


def test_aggregate_mean_std_and_difference_to_the_paper():
    def cell(seed, last, selected):
        return dict(method="sam", rate=0.2, seed=seed, result=dict(
            test_accuracy=dict(last=last, selected=selected, best=last),
            memorisation_last=0.1, noise=dict(type="symmetric", realised_rate=0.18)))

    [row] = table.aggregate([cell(0, 0.90, 0.91), cell(1, 0.94, 0.93), cell(2, 0.95, None)])
    assert row["seeds"] == [0, 1, 2]
    assert row["last_mean"] == pytest.approx(93.0)
    assert row["last_std"] == pytest.approx(((3**2 + 1**2 + 2**2) / 2) ** 0.5)  # sample std, by hand
    assert row["selected_mean"] == pytest.approx(92.0)  # the run without a selection is left out
    assert row["paper"] == 95.1 and row["last_minus_paper"] == pytest.approx(93.0 - 95.1)
    [single] = table.aggregate([cell(0, 0.5, 0.5)])
    assert single["last_std"] is None


def test_grid_runs_skips_finished_cells_and_reports(tiny_npz, tmp_path):
    root = tmp_path / "grid"
    args = ["table", "--dataset", tiny_npz, "--methods", "sgd,sam", "--rates", "0.2,0.6", "--seeds", "0", "--out", root,
            *TINY]
    r = run(*args)
    assert r.exit_code == 0, r.output
    results = sorted(root.glob("*/rate*/seed*/result.json"))
    assert [str(p.relative_to(root)) for p in results] == [
        "sam/rate0.2/seed0/result.json", "sam/rate0.6/seed0/result.json",
        "sgd/rate0.2/seed0/result.json", "sgd/rate0.6/seed0/result.json"]
    for p in results:
        config = json.loads((p.parent / "config.json").read_text())["config"]
        method, rate, seed = p.parts[-4], float(p.parts[-3][4:]), int(p.parts[-2][4:])
        assert (config["method"], config["noise_rate"], config["seed"], config["epochs"]) == (method, rate, seed, 1)
        assert config["rho"] is None  # left to the rule: the cpu profile's radius for sam, none for sgd
        rho = json.loads(p.read_text())["rho"]
        expected = PROFILES["cpu"]["rho"] / (2 if rate >= 0.8 else 1)
        assert rho == (None if method == "sgd" else dict(value=expected, source="profile", profile="cpu",
                                                         noise_rate=rate, rate="nominal"))

    # Re-running skips every finished cell: no result.json is rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in results}
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert r.stdout.count("already finished") == 4
    assert {p: p.stat().st_mtime_ns for p in results} == mtimes
    # ... but not with different settings.
    r = run(*args[:-len(TINY)], "--epochs", 2, *TINY[2:])
    assert r.exit_code == 2 and "different settings" in r.stderr

    # --report re-renders from the finished runs; its values are the cells' result.json values.
    for name in table.TABLE_FILES:
        (root / name).unlink()
    r = run("table", "--report", root, "--no-plot")
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout  # fits 80 columns
    rows = json.loads((root / "table.json").read_text())["rows"]
    by_cell = {(row["method"], row["rate"]): row for row in rows}
    assert set(by_cell) == {("sgd", 0.2), ("sgd", 0.6), ("sam", 0.2), ("sam", 0.6)}
    for p in results:
        acc = json.loads(p.read_text())["test_accuracy"]
        row = by_cell[(p.parts[-4], float(p.parts[-3][4:]))]
        assert row["last_mean"] == pytest.approx(100 * acc["last"])
        assert row["selected_mean"] == pytest.approx(100 * acc["selected"])
        assert row["paper"] == grid_paper.paper_value(row["method"], row["rate"])
    with open(root / "table.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [(c["method"], float(c["rate"])) for c in csv_rows] == [("sgd", 0.2), ("sgd", 0.6), ("sam", 0.2), ("sam", 0.6)]
    for c in csv_rows:
        assert float(c["last_mean"]) == pytest.approx(by_cell[(c["method"], float(c["rate"]))]["last_mean"], abs=1e-3)
    # The printed table: per method the paper's value, last and selected mean, each with its difference.
    sgd_block = r.stdout[r.stdout.index(" sgd "):r.stdout.index(" sam ")]
    for rate in (0.2, 0.6):
        row = by_cell[("sgd", rate)]
        for text in (f"{row['paper']:.1f}", f"{row['last_mean']:.1f}", f"{row['last_minus_paper']:+.1f}",
                     f"{row['selected_mean']:.1f}", f"{row['selected_minus_paper']:+.1f}"):
            assert text in sgd_block
    md = (root / "table.md").read_text()
    sgd = [by_cell[("sgd", rate)] for rate in (0.2, 0.6)]
    assert (f"| sgd | {sgd[0]['last_mean']:.1f} (84.8, {sgd[0]['last_mean'] - 84.8:+.1f}) "
            f"| {sgd[1]['last_mean']:.1f} (48.2, {sgd[1]['last_mean'] - 48.2:+.1f}) |") in md
    # Under SGD's last epoch, SGD stopped early by its noisy validation split: the baseline to beat.
    last_section = md[md.index("## Last epoch"):md.index("## Epoch selected")]
    early = last_section.splitlines()[[line.startswith("| sgd |") for line in last_section.splitlines()].index(True) + 1]
    assert early == (f"| sgd, early-stopped (its selected epoch) | {sgd[0]['selected_mean']:.1f} (84.8, "
                     f"{sgd[0]['selected_mean'] - 84.8:+.1f}) | {sgd[1]['selected_mean']:.1f} (48.2, "
                     f"{sgd[1]['selected_mean'] - 48.2:+.1f}) |")


def test_table_plot(tmp_path):
    pytest.importorskip("matplotlib")
    import numpy as np
    from matplotlib.colors import to_rgb
    from PIL import Image

    from noisysam.report.plots import plot_table, table_figure

    rows = [dict(method="sgd", rate=0.8, last_mean=30.0, last_std=2.0),
            dict(method="sgd", rate=0.2, last_mean=80.0, last_std=1.0),
            dict(method="sam", rate=0.4, last_mean=None, last_std=None),  # no run finished
            dict(method="sam", rate=0.6, last_mean=70.0, last_std=None)]  # one seed: no std
    rows = [dict(r, noise="symmetric") for r in rows]
    [ax] = table_figure(rows).axes
    # Per method, in rate order: the rows' means at rate in %, error bars mean +- std (none without a std),
    # runs without a mean left out; the paper's Table 4 values dashed in the same colour.
    ours = {c.get_label(): c for c in ax.containers}
    assert list(ours) == ["sgd", "sam"]
    expected = {"sgd": ([20, 80], [80.0, 30.0], [1.0, 2.0]), "sam": ([60], [70.0], [0.0])}
    paper = {line.get_color(): line for line in ax.get_lines()
             if line.get_linestyle() == "--" and len(line.get_xdata())}  # not the legend's empty entry
    for method, (x, y, std) in expected.items():
        line, _, (bars,) = ours[method]
        np.testing.assert_array_equal(line.get_xdata(), x)
        np.testing.assert_array_equal(line.get_ydata(), y)
        np.testing.assert_array_equal([seg[:, 0] for seg in bars.get_segments()], [[r, r] for r in x])
        np.testing.assert_array_equal([seg[:, 1] for seg in bars.get_segments()],
                                      [[m - s, m + s] for m, s in zip(y, std)])
        dashed = paper[line.get_color()]
        np.testing.assert_array_equal(dashed.get_xdata(), [20, 40, 60, 80])
        np.testing.assert_array_equal(dashed.get_ydata(), [grid_paper.paper_value(method, r) for r in (0.2, 0.4, 0.6, 0.8)])
    assert ours["sgd"][0].get_color() != ours["sam"][0].get_color()
    # CIFAR-10N has no rate: its point sits at its realised rate (%), and the paper's symmetric line is not drawn.
    [ax] = table_figure([dict(method="sam", rate=0.0, noise="cifar10n-worse", realised_noise_rate_mean=41.0,
                              last_mean=50.0, last_std=None)]).axes
    [(line, _, _)] = ax.containers
    assert list(line.get_xdata()) == [41.0]
    assert not [l for l in ax.get_lines() if l.get_linestyle() == "--" and len(l.get_xdata())]
    # table.png is that figure rendered: a PNG (7 x 4.5 in at 120 dpi, cropped) showing each method's colour.
    path = plot_table(tmp_path, rows)
    assert path == tmp_path / "table.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 400 and pixels.shape[1] > 600
    drawn = {tuple(p) for p in pixels.reshape(-1, 3).tolist()}
    for method, container in ours.items():
        assert tuple(round(255 * c) for c in to_rgb(container[0].get_color())) in drawn, method


def test_bad_grid_options_exit_2_before_writing(tiny_npz, tmp_path):
    root = tmp_path / "grid"
    for bad in (["--methods", "sgd,nope"], ["--rates", "0.2,1.5"], ["--seeds", "x"], ["--model", "nope"]):
        r = run("table", "--dataset", tiny_npz, "--out", root, *TINY, *bad)
        assert r.exit_code == 2 and r.stderr.startswith("error: "), (bad, r.output)
        assert not root.exists()
    r = run("table", "--report", tmp_path)
    assert r.exit_code == 2 and "no finished runs" in r.stderr


def test_a_method_parameter_no_method_of_the_grid_takes_fails_before_any_cell_trains(tiny_npz, tmp_path):
    root = tmp_path / "grid"
    r = run("table", "--dataset", tiny_npz, "--methods", "mixup,sgd", "--rates", "0.2", "--seeds", "0", "--out", root,
            "--method-param", "m=8", *TINY)
    assert r.exit_code == 2 and "m is given (8) but no method of the grid" in r.stderr and r.stderr.count("\n") == 1
    assert not root.exists()


def test_grid_defaults_are_the_papers_and_the_paper_profile_uses_its_rho_per_rate(tmp_path):
    from noisysam.run.config import TrainConfig, build_method

    cells = grid_cells.grid(tmp_path)
    assert {c.method for c in cells} == set(grid_paper.PAPER_METHODS) and {c.rate for c in cells} == {0.2, 0.4, 0.6, 0.8}
    sam = [c for c in cells if c.method == "sam"]
    rho = {c.rate: build_method(grid_cells.cell_config(TrainConfig(profile="paper"), c).resolved()).params["rho"]
           for c in sam}
    assert rho == {0.2: 0.1, 0.4: 0.1, 0.6: 0.1, 0.8: 0.05}
    assert grid_cells.cell_config(TrainConfig(profile="paper", rho=0.2), sam[-1]).resolved().rho == 0.2  # --rho wins
    assert len(grid_cells.grid(tmp_path, ["sgd", "sgd"], [0.2, 0.20], [0, 0])) == 1  # repeats are one cell


def test_rerun_resumes_a_killed_cell_from_its_checkpoint(tiny_npz, tmp_path):
    from noisysam.run.config import TrainConfig
    from noisysam.run.loop import train

    root = tmp_path / "grid"
    [cell] = grid_cells.grid(root, ["sgd"], [0.4], [0])
    base = TrainConfig(dataset=tiny_npz, epochs=2, model_params={"width": 4}, batch_size=50, amp="none")

    def kill_in_second_epoch(event, info):
        if event == "batch" and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(grid_cells.cell_config(base, cell), callback=kill_in_second_epoch)
    first_epoch = (cell.dir / "metrics.jsonl").read_text().splitlines()
    assert len(first_epoch) == 1 and not cell.finished

    r = run("table", "--dataset", tiny_npz, "--methods", "sgd", "--rates", "0.4", "--seeds", "0", "--out", root,
            "--epochs", 2, *TINY[2:])
    assert r.exit_code == 0, r.output
    lines = (cell.dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == first_epoch[0]  # epoch 1 kept as it was, epoch 2 trained on top
    assert cell.finished


def test_rho_alpha_and_method_params_go_to_the_cells_whose_method_takes_them(tmp_path):
    from noisysam.run.config import TrainConfig, build_method

    cells = grid_cells.grid(tmp_path / "grid", ["sgd", "asam", "mixup", "mixup-sam"], [0.4], [0])
    config = TrainConfig(rho=0.2, mixup_alpha=8.0)
    built = {c.method: build_method(grid_cells.cell_config(config, c).resolved()).params for c in cells}
    assert built == {"sgd": {}, "asam": get_method("asam", rho=0.2).params, "mixup": {"alpha": 8.0},
                     "mixup-sam": get_method("mixup-sam", rho=0.2, alpha=8.0).params}
    with_m = {c.method: build_method(grid_cells.cell_config(TrainConfig(rho=0.2, method_params={"m": 16}), c).resolved())
              .params for c in grid_cells.grid(tmp_path / "grid", ["sgd", "sam"], [0.4], [0])}
    assert with_m == {"sgd": {}, "sam": get_method("sam", rho=0.2, m=16).params}
    for option, methods in ((dict(rho=0.2), ["sgd", "mixup"]), (dict(mixup_alpha=8.0), ["sgd", "sam", "asam"]),
                            (dict(method_params={"m": 16}), ["sgd", "mixup"])):
        grid = grid_cells.grid(tmp_path / "grid", methods, [0.4], [0])
        name = next(iter(option.get("method_params", option)))
        with pytest.raises(ValueError, match=f"{name} is given .* but no method of the grid"):
            grid_cells.run_grid(grid, TrainConfig(**option))
    assert not (tmp_path / "grid").exists()


def test_report_skips_a_cell_whose_result_is_unusable_and_names_it(tiny_npz, tmp_path):
    root = tmp_path / "grid"
    r = run("table", "--dataset", tiny_npz, "--methods", "sgd", "--rates", "0.2,0.6", "--seeds", "0", "--out", root,
            *TINY)
    assert r.exit_code == 0, r.output
    good = json.loads((root / "sgd/rate0.2/seed0/result.json").read_text())
    bad = root / "sgd/rate0.6/seed0/result.json"
    result = json.loads(bad.read_text())
    del result["test_accuracy"]["selected"]
    bad.write_text(json.dumps(result))

    r = run("table", "--report", root, "--no-plot")
    assert r.exit_code == 0, r.output
    assert r.stderr == f"warning: a cell was skipped: cannot read run result {bad}: lacks 'test_accuracy.selected'\n"
    saved = json.loads((root / "table.json").read_text())
    [row] = saved["rows"]  # the usable cell alone, with its own values
    assert (row["method"], row["rate"]) == ("sgd", 0.2)
    assert row["last_mean"] == pytest.approx(100 * good["test_accuracy"]["last"])
    assert saved["skipped"] == [f"cannot read run result {bad}: lacks 'test_accuracy.selected'"]

    with pytest.warns(table.SkippedCellWarning, match=str(bad)):  # the API warns the same
        assert [c["rate"] for c in table.collect(root)] == [0.2]


def test_a_bad_model_option_refuses_the_grid_before_anything_trains(tiny_npz, tmp_path):
    r = run("table", "--dataset", tiny_npz, "--methods", "sgd", "--rates", "0.2", "--seeds", "0",
            "--out", tmp_path / "grid", *TINY, "--model-param", "width=abc")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert "width must be an integer >= 1, got 'abc' (str)" in r.stderr
    assert not (tmp_path / "grid").exists()


def write_result(root, method, rate, seed, last, wall, passes, noise="symmetric", realised=None):
    """A finished cell's result.json as train() writes it, with the given last-epoch accuracy (fraction), wall
    seconds and (forward, backward) passes; passes None: counted as null, "absent": a result from before counting."""
    result = dict(method=method, dataset="tiny", model="cnn", seed=seed, epochs=1, profile="cpu",
                  noise=dict(type=noise, mode="replace", rate=rate, realised_rate=rate if realised is None else realised),
                  test_accuracy=dict(last=last, best=last, best_epoch=1, selected=last, selected_epoch=1,
                                     selected_by="noisy-validation accuracy"),
                  memorisation_last=0.1, recovery_last=0.5, noise_auroc_last=0.5, stage1=None, wall_seconds=wall,
                  device="cpu", amp="fp32")
    if passes != "absent":
        result.update(forward_passes=None if passes is None else passes[0],
                      backward_passes=None if passes is None else passes[1])
    path = grid_cells.cell_dir(root, method, rate, seed) / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(result))


def test_cost_relative_to_sgd_by_hand(tmp_path):
    root = tmp_path / "grid"
    for seed, (wall, last) in enumerate([(10.0, 0.50), (14.0, 0.60)]):
        write_result(root, "sgd", 0.4, seed, last, wall, (100, 100))
    for seed, wall in enumerate([27.0, 33.0]):
        write_result(root, "sam", 0.4, seed, 0.7, wall, (200, 200))
        write_result(root, "sam", 0.6, seed, 0.6, wall, (200, 200))  # no sgd at 60%
        write_result(root, "looksam", 0.4, seed, 0.65, 15.0, (120, 120))
    write_result(root, "mixup", 0.4, 0, 0.6, 11.0, None)  # one seed counted null, one from before counting
    write_result(root, "mixup", 0.4, 1, 0.6, 13.0, "absent")
    write_result(root, "co-teaching", 0.4, 0, 0.7, 30.0, (300, 200))
    two = grid_cells.cell_dir(root, "co-teaching", 0.4, 0) / "result.json"
    two.write_text(json.dumps({**json.loads(two.read_text()), "networks": 2}))  # a result.json says how many it trains
    rows = table.write_table(root)["rows"]
    cost = {(r["method"], r["rate"]): (r["passes_mean"], r["wall_seconds_mean"], r["passes_vs_sgd"], r["wall_vs_sgd"])
            for r in rows}
    # By hand: sgd 200 passes (100 + 100), wall (10 + 14) / 2 = 12 s; sam 400 passes, (27 + 33) / 2 = 30 s.
    assert cost == {("sgd", 0.4): (200, 12, 1, 1), ("sam", 0.4): (400, 30, 2, 2.5), ("sam", 0.6): (400, 30, None, None),
                    ("mixup", 0.4): (None, 12, None, 1), ("looksam", 0.4): (240, 15, 1.2, 1.25),
                    ("co-teaching", 0.4): (500, 30, 2.5, 2.5)}

    with open(root / "table.csv") as f:
        csv_rows = {(c["method"], c["rate"]): c for c in csv.DictReader(f)}
    assert list(next(iter(csv_rows.values())))[-5:] == ["passes_mean", "wall_seconds_mean", "passes_vs_sgd", "wall_vs_sgd",
                                                        "networks"]  # appended: earlier columns keep their positions
    assert csv_rows[("co-teaching", "0.4")]["networks"] == "2"
    assert [csv_rows[("sam", "0.4")][k] for k in ("passes_vs_sgd", "wall_vs_sgd")] == ["2.0", "2.5"]
    assert [csv_rows[("mixup", "0.4")][k] for k in ("passes_mean", "passes_vs_sgd", "wall_vs_sgd")] == ["", "", "1.0"]
    md = (root / "table.md").read_text()
    section = md[md.index("## Cost"):md.index("## Rows the paper quotes")]
    assert section.strip().splitlines()[-6:] == [  # per rate, methods in table order; accuracy mean ± std by hand
        "| 40% | sgd | 1 | 55.0 ± 7.1 | 1.00× | 1.00× | 200 | 12.0 |",
        "| 40% | mixup | 1 | 60.0 ± 0.0 | – | 1.00× | – | 12.0 |",
        "| 40% | sam | 1 | 70.0 ± 0.0 | 2.00× | 2.50× | 400 | 30.0 |",
        "| 40% | co-teaching | 2 | 70.0 | 2.50× | 2.50× | 500 | 30.0 |",
        "| 40% | looksam | 1 | 65.0 ± 0.0 | 1.20× | 1.25× | 240 | 15.0 |",
        "| 60% | sam | 1 | 60.0 ± 0.0 | – | – | 400 | 30.0 |"]
    assert "## Last epoch" in md and "## Epoch selected" in md  # the accuracy sections stay

    r = run("table", "--report", root, "--no-plot")
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout
    sam = r.stdout[r.stdout.index(" sam "):r.stdout.index(" co-teaching ")]
    # Under each rate, sam's passes and wall time relative to sgd (none at 60%: no sgd there).
    assert [line.split()[-3:] for line in sam.splitlines() if "×" in line] == [["×", "2.00×", "–"], ["×", "2.50×", "–"]]


def test_the_papers_numbers_stand_only_beside_symmetric_noise_and_a_rateless_kind_is_named(tmp_path):
    """Table 4 is symmetric noise: an asymmetric or CIFAR-10N cell gets no paper value, and a kind that fixes its own
    labels (rate 0 in the grid) is headed by its name and its realised share of wrong labels, not by "0%"."""
    for noise, rate, realised in (("asymmetric", 0.4, 0.2), ("cifar10n-worse", 0.0, 0.41)):
        root = tmp_path / noise
        for seed, last in enumerate([0.5, 0.6]):
            write_result(root, "sgd", rate, seed, last, 10.0, (100, 100), noise=noise, realised=realised + seed / 100)
            write_result(root, "sam", rate, seed, 0.7, 20.0, (200, 200), noise=noise, realised=realised + seed / 100)
        rows = table.write_table(root)["rows"]
        assert [(r["noise"], r["paper"], r["last_minus_paper"]) for r in rows] == [(noise, None, None)] * 2
        md = (root / "table.md").read_text()
        assert "Rows the paper quotes" not in md
        heading = "40%" if noise == "asymmetric" else "cifar10n-worse, 42% wrong"  # realised 41% and 42%: mean 41.5
        assert {r["column"] for r in rows} == {heading}
        assert f"| method | {heading} |" in md and f"| {heading} | sam | 1 | 70.0 ± 0.0 | 2.00× | 2.00× |" in md
        r = run("table", "--report", root, "--no-plot")
        assert r.exit_code == 0 and "Table 4" not in r.stdout and "Δ" not in r.stdout, r.output
        assert heading.split(",")[0] in r.stdout, r.output
    [symmetric] = table.aggregate([dict(method="sam", rate=0.4, seed=0, result=json.loads(
        (grid_cells.cell_dir(tmp_path / "asymmetric", "sam", 0.4, 0) / "result.json").read_text().replace("asymmetric", "symmetric")))])
    assert symmetric["paper"] == grid_paper.paper_value("sam", 0.4)



def test_a_cell_is_what_its_result_json_says_not_what_its_folders_are_named(tmp_path):
    """The table reads a cell's method, noise rate and seed from its result.json: a folder name keeps the rate to 6
    digits (%g), so 0.123456789 came back as 0.123457, and says nothing once a folder is renamed by hand."""
    root = tmp_path / "grid"
    write_result(root, "sgd", 0.123456789, 0, 0.5, 10.0, (100, 100))
    assert grid_cells.cell_dir(root, "sgd", 0.123456789, 0).parent.name == "rate0.123457"
    write_result(root, "sam", 0.4, 1, 0.7, 20.0, (200, 200))
    grid_cells.cell_dir(root, "sam", 0.4, 1).rename(grid_cells.cell_dir(root, "sam", 0.4, 1).with_name("seed7"))
    rows = table.write_table(root)["rows"]
    assert [(r["method"], r["rate"], r["seeds"]) for r in rows] == [("sgd", 0.123456789, [0]), ("sam", 0.4, [1])]


def test_labels_without_a_rate_take_the_rate_the_grid_recorded_in_config_json(tmp_path):
    """CIFAR-10N's labels have no nominal rate (null in result.json): the cell's rate is its config.json's noise_rate;
    a cell without a readable one is skipped, named, like a cell with an unusable result.json."""
    root = tmp_path / "grid"
    for seed in (0, 1):
        write_result(root, "sgd", 0.0, seed, 0.5, 10.0, (100, 100), noise="cifar10n-worse", realised=0.4)
        path = grid_cells.cell_dir(root, "sgd", 0.0, seed) / "result.json"
        result = json.loads(path.read_text())
        path.write_text(json.dumps({**result, "noise": {**result["noise"], "rate": None}}))
    (path.parent / "config.json").write_text(json.dumps({"config": {"noise_rate": 0.0}}))
    with pytest.warns(table.SkippedCellWarning, match="seed0/config.json"):
        rows = table.write_table(root)["rows"]
    assert [(r["rate"], r["seeds"], r["column"]) for r in rows] == [(0.0, [1], "cifar10n-worse, 40% wrong")]

def test_pareto_front_by_hand():
    from noisysam.report.plots import pareto_front

    points = [(1.0, 50.0), (2.0, 70.0), (1.2, 48.0), (1.2, 60.0), (2.5, 70.0), (3.0, 71.0), (1.0, 45.0)]
    # (1.2, 48) is beaten by (1.0, 50), (2.5, 70) by (2.0, 70), (1.0, 45) by (1.0, 50).
    assert pareto_front(points) == [(1.0, 50.0), (1.2, 60.0), (2.0, 70.0), (3.0, 71.0)]


def test_cost_plot(tmp_path):
    pytest.importorskip("matplotlib")
    import numpy as np

    from noisysam.report.plots import cost_figure

    def row(method, rate, wall, last, std):
        return dict(method=method, rate=rate, noise="symmetric", column=f"{rate:.0%}", wall_vs_sgd=wall, last_mean=last,
                    last_std=std)

    rows = [row("sgd", 0.4, 1.0, 60.0, 2.0), row("sgd", 0.6, 1.0, 40.0, 1.0),
            row("sam", 0.4, 2.1, 70.0, 1.0), row("sam", 0.6, 2.0, 55.0, None),  # one seed: no std
            row("looksam", 0.4, 1.3, 58.0, 0.5), row("looksam", 0.6, None, 50.0, 0.5),  # no wall time: left out
            row("mixup", 0.2, None, 80.0, 1.0)]  # no sgd at 20%: no panel
    fig = cost_figure(rows)
    assert [ax.get_title() for ax in fig.axes] == ["40% noise", "60% noise"]
    expected = {"40% noise": {"sgd": (1.0, 60.0, 2.0), "sam": (2.1, 70.0, 1.0), "looksam": (1.3, 58.0, 0.5)},
                "60% noise": {"sgd": (1.0, 40.0, 1.0), "sam": (2.0, 55.0, 0.0)}}
    colours = {}
    for ax in fig.axes:
        points = {c.get_label(): c for c in ax.containers}
        assert list(points) == list(expected[ax.get_title()])  # one marker per method, in row order
        for method, (x, y, std) in expected[ax.get_title()].items():
            line, _, (bars,) = points[method]
            np.testing.assert_array_equal(line.get_xdata(), [x])
            np.testing.assert_array_equal(line.get_ydata(), [y])
            np.testing.assert_array_equal(bars.get_segments()[0], [[x, y - std], [x, y + std]])
            colours.setdefault(method, line.get_color())
            assert line.get_color() == colours[method]  # a method has one colour in every panel
        assert {t.get_text(): t.xy for t in ax.texts} == {m: (x, y) for m, (x, y, _) in expected[ax.get_title()].items()}
        [front] = [line for line in ax.get_lines() if line.get_label() == "frontier"]
        by_hand = {"40% noise": [(1.0, 60.0), (2.1, 70.0)], "60% noise": [(1.0, 40.0), (2.0, 55.0)]}
        assert list(zip(front.get_xdata(), front.get_ydata())) == by_hand[ax.get_title()]
    assert len(set(colours.values())) == 3
    with pytest.raises(ValueError, match="rows: none has both"):
        cost_figure([row("sam", 0.4, None, 70.0, 1.0)])
    # cost="passes": the counted passes on the x axis instead of the wall time
    by_passes = [dict(r, passes_vs_sgd=None if r["wall_vs_sgd"] is None else 2 * r["wall_vs_sgd"]) for r in rows]
    [ax40, _] = cost_figure(by_passes, cost="passes").axes
    assert ax40.get_xlabel() == "training passes relative to sgd (×)"
    assert {t.get_text(): t.xy for t in ax40.texts} == {"sgd": (2.0, 60.0), "sam": (4.2, 70.0), "looksam": (2.6, 58.0)}
    with pytest.raises(ValueError, match="cost must be one of \\['passes', 'wall'\\], got 'flops'"):
        cost_figure(by_passes, cost="flops")

    # `noisysam table` draws it as cost.png beside table.png.
    root = tmp_path / "grid"
    for method, passes in (("sgd", (10, 10)), ("sam", (20, 20))):
        write_result(root, method, 0.4, 0, 0.5, 2.0 * passes[0], passes)
    r = run("table", "--report", root)
    assert r.exit_code == 0, r.output
    assert (root / "table.png").is_file()
    assert (root / "cost.png").read_bytes().startswith(b"\x89PNG")


def test_a_tiny_grid_counts_sam_at_twice_sgds_passes(tiny_npz, tmp_path):
    root = tmp_path / "grid"
    r = run("table", "--dataset", tiny_npz, "--methods", "sgd,sam", "--rates", "0.4", "--seeds", "0", "--out", root,
            *TINY)
    assert r.exit_code == 0, r.output
    result = {m: json.loads((grid_cells.cell_dir(root, m, 0.4, 0) / "result.json").read_text()) for m in ("sgd", "sam")}
    rows = {row["method"]: row for row in json.loads((root / "table.json").read_text())["rows"]}
    # SGD: one forward and one backward pass per step; SAM: two of each.
    assert rows["sgd"]["passes_mean"] == 2 * result["sgd"]["train_steps"]
    assert rows["sam"]["passes_mean"] == 4 * result["sam"]["train_steps"]
    assert rows["sam"]["passes_vs_sgd"] == 2.0 and rows["sgd"]["passes_vs_sgd"] == 1.0
    assert rows["sam"]["wall_vs_sgd"] == pytest.approx(result["sam"]["wall_seconds"] / result["sgd"]["wall_seconds"])


def test_a_cells_label_names_a_noise_kind_that_takes_no_rate_instead_of_its_rate(tmp_path):
    [cell] = grid_cells.grid(tmp_path, ["sam"], [0.0], [1], combos=({"m": 16},))
    assert cell.label() == "sam m=16 0% seed 1"
    assert cell.label("cifar10n-worse") == "sam m=16 cifar10n-worse seed 1"
    assert cell.label(str(tmp_path / "mine.npz")) == "sam m=16 mine.npz seed 1"
    [cell] = grid_cells.grid(tmp_path, ["sgd"], [0.4], [0])
    assert cell.label("asymmetric") == "sgd 40% seed 0"
