"""What the console shows: live progress of a run or a grid (rich progress bars, usable as :func:`noisysam.train`
callbacks and grid watches), the tables that summarise a run, a grid, a sweep, a labels file and a detection, and
the one-line note that replaces a plot when matplotlib is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from noisysam.grid import executors
from noisysam.grid import render
from noisysam.noise.labels import NoisyLabels, label as noise_label


def progress_bars(console: Console) -> Progress:
    """Progress lines: description, bar, done/total, elapsed, ETA, status. The speed behind the ETA is
    averaged over the last hour, so epochs of minutes still give one."""
    return Progress(TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                    console=console, speed_estimate_period=3600)


def epoch_status(record: dict) -> str:
    mem = record.get("memorisation")
    return f"test {record['test_accuracy']:.1%}" + ("" if mem is None else f"  memorised {mem:.1%}")


class _Live:
    """A rich progress display, stopped when the ``with`` block ends if it started (it starts with the
    first run: not for a bad option or a finished run, which then print nothing)."""

    def __init__(self, console: Console):
        self.progress = progress_bars(console)

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress.live.is_started:
            self.progress.stop()


class RunProgress(_Live):
    """A :func:`noisysam.run.loop.train` callback drawing live progress: epochs over all stages, batches of
    the current epoch with ETA, the loss (read every ``every`` batches: each read is a device sync),
    clean test accuracy and memorisation after each epoch. Use as a context manager."""

    def __init__(self, console: Console, every: int = 10):
        super().__init__(console)
        self.every = every
        self.tasks: tuple = ()

    def __call__(self, event: str, info: dict) -> None:
        p = self.progress
        if event == "start":
            p.start()
            for task in self.tasks:
                p.remove_task(task)
            cfg = info["config"]
            self.stages, self.epochs = info["stages"], info["epochs"]
            done = (info["stage"] - 1) * self.epochs + info["epoch"]
            history = info["history"]
            label = f"{cfg.method} {noise_label(cfg.noise, cfg.noise_rate)} seed {cfg.seed}"
            self.tasks = (p.add_task(label, total=self.stages * self.epochs, completed=done,
                                     status=epoch_status(history[-1]) if history else ""),
                          p.add_task("  batches", total=info["batches"], status=""))
        elif event == "batch":
            b, stage = info["batch"], info["stage"]
            where = f"  epoch {info['epoch']}/{self.epochs}" + (f" stage {stage}/{self.stages}" if self.stages > 1 else "")
            fields = dict(description=where, completed=b, total=info["batches"])
            if b % self.every == 0 or b == info["batches"]:
                fields["status"] = f"loss {float(info['loss']):.3f}"
            p.update(self.tasks[1], **fields)
        elif event == "epoch":
            p.update(self.tasks[0], advance=1, status=epoch_status(info))
            p.reset(self.tasks[1])
        elif event == "end":
            p.update(self.tasks[1], visible=False)


class GridProgress(_Live):
    """A :class:`noisysam.grid.executors.Watch` drawing a grid: one line per running cell (epochs over all its
    stages, elapsed, ETA, its last test accuracy) under one line for the whole grid (epochs of the cells
    to run, ETA), and a line per finished, skipped or failed cell above them. Use as a context manager."""

    def __init__(self, console: Console, cells: int):
        super().__init__(console)
        self.cells, self.reported = cells, 0
        self.done: dict[Path, int] = {}  # epochs done per cell to run
        self.tasks: dict[Path, Any] = {}  # progress line per running cell
        self.ended = self.failed = 0

    def report(self, label: str, text: str) -> None:
        """``[i/n] label: text`` above the live lines."""
        self.reported += 1
        self.progress.console.print(f"[{self.reported}/{self.cells}] {escape(label)}: {text}", soft_wrap=True)

    def begin(self, jobs: Sequence[executors.Job]) -> None:
        if not jobs:
            return
        self.done = {job.dir: executors.epochs_done(job.dir)[0] for job in jobs}
        self.total = sum(job.epochs for job in jobs)
        self.progress.start()
        self.grid = self.progress.add_task(f"grid: {len(jobs)} cells to run", total=self.total,
                                           completed=sum(self.done.values()), status="")

    def _update_grid(self) -> None:
        waiting = len(self.done) - len(self.tasks) - self.ended
        status = f"{len(self.tasks)} running, {waiting} waiting" + (f", {self.failed} failed" if self.failed else "")
        self.progress.update(self.grid, completed=sum(self.done.values()), total=self.total, status=status)

    def started(self, job: executors.Job, done: int) -> None:
        self.done[job.dir] = done
        self.tasks[job.dir] = self.progress.add_task(f"  {escape(job.label)}", total=job.epochs, completed=done,
                                                     status="starting")
        self._update_grid()

    def advanced(self, job: executors.Job, done: int, last: Optional[dict]) -> None:
        self.done[job.dir] = done
        self.progress.update(self.tasks[job.dir], completed=done, status=epoch_status(last) if last else "")
        self._update_grid()

    def finished(self, outcome: executors.Outcome) -> None:
        job = outcome.job
        self.progress.remove_task(self.tasks.pop(job.dir))
        self.ended += 1
        if outcome.error is None:
            self._update_grid()
            return
        self.failed += 1
        self.total -= job.epochs - self.done[job.dir]  # its epochs left are no longer part of the grid's work
        self._update_grid()
        self.report(job.label, f"[red]failed[/]: {escape(outcome.error)}")


_no_matplotlib_noted = False


def show_plot(console: Console, make: Callable[..., Path], *args: Any) -> None:
    """Write a plot; without matplotlib, a one-line note instead, once per process (plots are optional)."""
    global _no_matplotlib_noted
    try:
        path = make(*args)
    except ImportError:
        if not _no_matplotlib_noted:
            _no_matplotlib_noted = True
            console.print(escape("note: matplotlib is not installed, no plots written (pip install 'noisysam[plot]')"),
                          style="dim", soft_wrap=True)
        return
    except Exception as e:  # a plot is an extra: its failure must not turn a finished run into an error
        console.print(escape(f"note: no plot written ({type(e).__name__}: {e})"), style="dim", soft_wrap=True)
        return
    console.print(escape(f"plot: {path}"), style="dim", soft_wrap=True)


def pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.1%}"


def summary_table(s: dict, run_dir: Optional[Path]) -> Table:
    acc = s["test_accuracy"]
    t = Table(title=f"{s['method']} on {escape(str(s['dataset']))}, {s['noise']['type']} noise {pct(s['noise']['rate'])} "
                    f"(realised {pct(s['noise']['realised_rate'])}), seed {s['seed']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("clean test accuracy, last epoch", pct(acc["last"]))
    if acc["selected"] is not None:
        t.add_row("  at the epoch selected by validation", f"{pct(acc['selected'])} (epoch {acc['selected_epoch']}, "
                                                            f"{acc['selected_by']})")
    t.add_row("  best epoch (peeks at the test set)", f"{pct(acc['best'])} (epoch {acc['best_epoch']})")
    if s.get("networks", 1) > 1:  # which prediction the accuracies are (two-network methods)
        t.add_row("  prediction", f"{s['prediction']} ({s['networks']} networks trained)")
    if s.get("stage1"):
        t.add_row("  first model (before relabelling)", f"{pct(s['stage1']['test_accuracy'])}; relabels correct: "
                                                         f"{pct(s['stage1']['relabel_accuracy'])}")
    t.add_row("memorised wrong labels (last)", pct(s["memorisation_last"]))
    t.add_row("recovered true labels (last)", pct(s["recovery_last"]))
    auroc = s["noise_auroc_last"]
    t.add_row("noise detection AUROC (loss)", "–" if auroc is None or auroc != auroc else f"{auroc:.3f}")
    t.add_row("model / epochs / profile", f"{s['model']} / {s['epochs']} / {s['profile']}")
    t.add_row("time / device", f"{s['wall_seconds']:.0f} s on {s['device']} ({s['amp']})")
    if s.get("forward_passes") is not None:  # counted since the cheaper SAM variants; older runs lack it
        steps = s["train_steps"]
        t.add_row("training passes (counted)", f"{s['forward_passes']:g} forward, {s['backward_passes']:g} backward "
                                               f"in {steps} steps ({s['forward_passes'] / steps:.2f} + "
                                               f"{s['backward_passes'] / steps:.2f} per step)")
    t.add_row("run directory", escape(str(run_dir)) if run_dir else "not saved (pass --out DIR)")
    return t


def grid_table(table: dict, root: Path) -> Table:
    """Per method: the paper's value, then mean ± std at the last epoch and at the selected epoch, each
    followed by its difference to the paper (Δ), then the cost relative to SGD at that rate (training passes and
    wall time) where the grid has it. Narrow enough for 80 columns with the paper's 5 x 4 grid."""
    rows = table["rows"]
    costed = any(r["passes_vs_sgd"] is not None or r["wall_vs_sgd"] is not None for r in rows)
    rates = sorted({r["rate"] for r in rows})
    by_key = {(r["method"], r["rate"]): r for r in rows}
    column = {r["rate"]: r["column"] for r in rows}
    beside = any(r["paper"] is not None for r in rows)  # Table 4 is symmetric noise only
    t = Table(title=f"Clean-test accuracy (%), mean ± std over seeds{', beside the SAM paper' + chr(39) + 's Table 4' if beside else ''}"
                    f"\n{escape(str(root))}",
              box=box.SIMPLE_HEAD, show_lines=True, pad_edge=False, padding=(0, 1, 0, 0))
    t.add_column("method", style="bold", no_wrap=True)
    t.add_column("", no_wrap=True)
    for rate in rates:
        t.add_column(escape(column[rate]), justify="right", no_wrap=True)
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [by_key.get((method, rate)) for rate in rates]
        has_paper = any(r is not None and r["paper"] is not None for r in mine)
        what = ["paper"] if has_paper else []
        for name in ("last", "selected"):
            what += [name] + (["  Δ"] if has_paper else [])
        what += ["passes ×", "wall ×"] if costed else []
        cells = []
        for r in mine:
            if r is None:
                cells.append("")
                continue
            lines = [f"[dim]{'–' if r['paper'] is None else format(r['paper'], '.1f')}[/]"] if has_paper else []
            for key in ("last", "selected"):
                lines.append(render.fmt(r[f"{key}_mean"], r[f"{key}_std"]))
                if has_paper:
                    lines.append(f"[dim]{render.fmt_diff(r[f'{key}_minus_paper'])}[/]")
            lines += [render.fmt_ratio(r["passes_vs_sgd"]), render.fmt_ratio(r["wall_vs_sgd"])] if costed else []
            cells.append("\n".join(lines))
        t.add_row(method, "[dim]" + "\n".join(what) + "[/]", *cells)
    s = table["settings"]
    t.caption = escape(f"{', '.join(map(str, s['dataset']))}, {', '.join(map(str, s['model']))}, "
                       f"{', '.join(map(str, s['epochs']))} epochs, profile {', '.join(map(str, s['profile']))}; "
                       f"seeds per cell: {', '.join(sorted({str(len(r['seeds'])) for r in rows}))}; "
                       "last: final epoch; selected: epoch of best noisy-validation accuracy"
                       + ("; Δ: minus the paper" if beside else "")
                       + ("; passes ×, wall ×: training passes (forward + backward) and wall time relative to sgd at "
                          "that rate" if costed else ""))
    return t


def sweep_table(content: dict, root: Path) -> Table:
    """The choice per rate with its validation and test accuracy."""
    t = Table(title=f"{content['method']}: parameters chosen per noise rate on {content['select']}-label validation "
                    f"(mean ± std over seeds, %)\n{escape(str(root))}", box=box.SIMPLE_HEAD)
    for column in ("rate", "chosen", "validation", "test"):
        t.add_column(column, justify="left" if column == "chosen" else "right")
    for c in content["choices"]:
        t.add_row(f"{c['rate']:.0%}", escape(c["name"]), render.fmt(c["val_mean"], c["val_std"]),
                  render.fmt(c["test_mean"], c["test_std"]))
    t.caption = "chosen: highest mean validation accuracy at the last epoch; the test set is not used to choose"
    return t


def show_labels(console: Console, labels: NoisyLabels, classes: Optional[list], path: Optional[str]) -> None:
    k = labels.num_classes
    names = [str(c) for c in classes] if classes and len(classes) == k else [str(i) for i in range(k)]
    p = labels.provenance
    console.print(f"realised noise rate: {labels.rate:.4f} ({int(labels.is_noisy.sum())} of {len(labels)} labels "
                  f"wrong); kind {p.get('kind')}, nominal rate {p.get('nominal_rate')}, mode {p.get('mode')}, "
                  f"seed {p.get('seed')}")
    # Compact enough for 80 columns with 10 classes: headers are the first 4 letters of the class names.
    t = Table(title="realised transition matrix T\\[clean, noisy] = P(noisy label | clean class)",
              box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    t.add_column("clean", style="bold", no_wrap=True)
    for name in names:
        t.add_column(name[:4], justify="right", no_wrap=True, min_width=4)
    t.add_column("wrong", justify="right", style="bold", no_wrap=True)
    for i, name in enumerate(names):
        row = [("[bold]" if i == j else "") + (f"{v:.2f}" if v else "[dim]·[/]") + ("[/]" if i == j else "")
               for j, v in enumerate(labels.transition[i])]
        t.add_row(name, *row, f"{1 - labels.transition[i, i]:.1%}")
    console.print(t)
    if path:
        console.print(escape(f"labels file: {path}"), style="dim", soft_wrap=True)


def detection_table(detection: Any) -> Table:
    s = detection.summary()
    t = Table(title=f"label issues ({s['score']}, {s['n']} labels)", show_header=False, box=box.SIMPLE)
    t.add_row("flagged", f"{s['flagged']} ({pct(s['flagged'] / s['n'])})")
    t.add_row("estimated noise rate", f"{pct(s['estimated_rate'])} by {s['estimator']}")
    detail = {k: v for k, v in s["estimator_detail"].items() if k != "annotators"}
    t.add_row(f"  {s['estimator']}", escape(s["estimator_means"] + "".join(
        f"; {k} {v:.4g}" if isinstance(v, float) else f"; {k} {v}" for k, v in detail.items())))
    for name, other in s["other_estimates"].items():
        t.add_row(f"  also by {name}", f"{pct(other['rate'])} ± {pct(other['standard_error'])} (standard error)"
                  if other["rate"] is not None else
                  escape(f"none: {other.get('unavailable', 'a model no better than chance')}"))
    for a in s["estimator_detail"].get("annotators", []):
        t.add_row(f"  annotator {a['name']}", f"quality {a['quality']:.3f}, agrees with the consensus "
                                               f"{pct(a['agreement_with_consensus'])}, accuracy {pct(a['accuracy'])}")
    truth = s["truth"]
    if truth is None:
        t.add_row("realised noise rate", "unknown (no clean labels)")
    else:
        t.add_row("realised noise rate", pct(truth["realised_rate"]))
        t.add_row("AUROC", f"{truth['auroc']:.3f}")
        t.add_row("precision / recall at the realised rate",
                  f"{pct(truth['precision_at_realised'])} / {pct(truth['recall_at_realised'])}")
    top = ", ".join(f"{r['index']} ({r['given']}->{r['suggested']})" for r in detection.ranked()[:5])
    t.add_row("most likely wrong (given->suggested)", top)
    return t
