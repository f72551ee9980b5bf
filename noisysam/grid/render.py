"""A grid's table as text: table.md (:func:`render_markdown`: the accuracy tables beside the paper's, the cost
relative to SGD, the paper's literature rows) and table.csv (:func:`render_csv`), from the rows of
:func:`noisysam.grid.table.aggregate`; the number formats the console shares (:func:`fmt`, :func:`fmt_diff`,
:func:`fmt_ratio`).
"""

from __future__ import annotations

import csv
import io
from typing import Optional

from noisysam.grid.cells import params_name
from noisysam.grid.paper import LITERATURE_TABLE4, PAPER_RATES, _method_order

def fmt(mean: Optional[float], std: Optional[float] = None) -> str:
    """``83.1 ± 0.4``; ``83.1`` without a std; ``–`` for no value."""
    if mean is None:
        return "–"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def fmt_diff(diff: Optional[float]) -> str:
    return "–" if diff is None else f"{diff:+.1f}"


def fmt_ratio(ratio: Optional[float]) -> str:
    """``1.27×``; ``–`` for no value."""
    return "–" if ratio is None else f"{ratio:.2f}×"


#: What the cost columns mean (table.md's Cost section and table.json).
COST_NOTE = ("Training passes: forward + backward passes of the model in batch equivalents (a step on one batch "
             "costs SGD 1 + 1, SAM 2 + 2; a method training several networks counts every network's, so it costs at "
             "least networks x SGD; a method's own per-epoch passes over the training set, such as DivideMix's "
             "co-divide, count; the run's evaluation does not); wall: seconds of the whole run (training, per-epoch "
             "evaluation, checkpoints); both the mean over seeds, and relative to sgd's at the same noise rate in the "
             "same grid (a ratio of means); missing (–, null) where the grid has no sgd at that rate or a run "
             "predates pass counting")


def _cost_section(rows: list[dict]) -> str:
    """table.md's Cost section: per noise rate, each method's last-epoch accuracy beside its cost relative to SGD."""
    value = lambda v, spec: "–" if v is None else format(v, spec)
    body = "".join(f"| {r['column']} | {r['method']} | {r['networks']} | {fmt(r['last_mean'], r['last_std'])} | "
                   f"{fmt_ratio(r['passes_vs_sgd'])} | {fmt_ratio(r['wall_vs_sgd'])} | "
                   f"{value(r['passes_mean'], '.0f')} | {value(r['wall_seconds_mean'], '.1f')} |\n"
                   for r in sorted(rows, key=lambda r: r["rate"]))  # stable: methods stay in table order
    return ("## Cost: training passes and wall time relative to SGD\n\n" + COST_NOTE + ".\n\n"
            "| noise | method | networks | last epoch (%) | passes ×SGD | wall ×SGD | passes | wall (s) |\n"
            "|---|---|---|---|---|---|---|---|\n" + body)


def render_markdown(rows: list[dict], info: dict[str, list], tuning: Optional[dict] = None) -> str:
    """table.md: last-epoch and selected-epoch accuracy tables beside the paper's, the cost relative to SGD beside
    last-epoch accuracy, then the paper's literature rows; ``tuning`` (params_from.json): the methods whose
    parameters a sweep chose per rate, and their values."""
    rates = sorted({r["rate"] for r in rows})
    methods = _method_order(r["method"] for r in rows)
    by_key = {(r["method"], r["rate"]): r for r in rows}
    column = {r["rate"]: r["column"] for r in rows}
    header = "| method | " + " | ".join(column[rate] for rate in rates) + " |\n"
    rule = "|---|" + "---|" * len(rates) + "\n"
    n_seeds = sorted({len(r["seeds"]) for r in rows})
    lines = ["# noisysam: the SAM paper's label-noise table (Foret et al. 2021, Table 4)\n",
             "Clean-test accuracy (%), mean ± std over seeds (seeds per cell: "
             f"{', '.join(map(str, n_seeds))})"
             + ("; in brackets the paper's value and the difference to it.\n" if any(r["paper"] is not None for r in rows)
                else ". The paper's Table 4 is symmetric noise: no value of it stands beside these.\n"),
             "Settings: " + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in info.items()) + "\n"]
    for method, record in (tuning or {}).items():
        values = "; ".join(f"{float(rate):.0%}: {params_name(params.items())}" for rate, params in record["choices"].items())
        lines.append(f"Tuned per rate by the sweep in {record['sweep']}: {method} ({values}).\n")
    for key, title in (("last", "Last epoch (the paper's convention)"),
                       ("selected", "Epoch selected by accuracy on a held-out noisy-label validation split")):
        lines.append(f"## {title}\n")
        body = ""
        # In the last-epoch table, SGD stopped early by its noisy validation split stands under SGD: the baseline a
        # label-noise method has to beat (anyone can stop SGD early).
        rows_of = [(m, m, key) for m in methods]
        if key == "last" and "sgd" in methods:
            rows_of.insert(methods.index("sgd") + 1, ("sgd", "sgd, early-stopped (its selected epoch)", "selected"))
        for m, name, value in rows_of:
            cells = []
            for rate in rates:
                r = by_key.get((m, rate))
                if r is None:
                    cells.append("")
                    continue
                text = fmt(r[f"{value}_mean"], r[f"{value}_std"])
                if r["paper"] is not None:
                    text += f" ({r['paper']:.1f}, {fmt_diff(r[f'{value}_minus_paper'])})"
                cells.append(text)
            body += f"| {name} | " + " | ".join(cells) + " |\n"
        lines.append(header + rule + body)
    lines.append(_cost_section(rows))
    if not any(r["noise"] == "symmetric" for r in rows):
        return "\n".join(lines)
    lines.append("## Rows the paper quotes from the literature\n")
    lit_header = "| method | " + " | ".join(f"{rate:.0%}" for rate in PAPER_RATES) + " |\n"
    lines.append(lit_header + "|---|" + "---|" * len(PAPER_RATES) + "\n" +
                 "".join(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |\n"
                         for name, values in LITERATURE_TABLE4.items()))
    return "\n".join(lines)


CSV_COLUMNS = ("method", "noise", "rate", "n_seeds", "last_mean", "last_std", "selected_mean", "selected_std", "best_mean",
               "best_std", "paper", "last_minus_paper", "selected_minus_paper", "memorisation_last_mean",
               "realised_noise_rate_mean", "passes_mean", "wall_seconds_mean", "passes_vs_sgd", "wall_vs_sgd", "networks")


def render_csv(rows: list[dict]) -> str:
    """table.csv: one line per (method, rate); empty fields where a value is undefined."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        values = {**r, "n_seeds": len(r["seeds"])}
        writer.writerow(["" if values[c] is None else round(values[c], 3) if isinstance(values[c], float)
                         else values[c] for c in CSV_COLUMNS])
    return out.getvalue()
