"""The paper's ablation figures from the cells' metrics: PNG and PDF, published points beside ours.

    python -m drr.reports.figures --spec results/reports/fig4a.spec.json --out reports/fig4a.png \
        --metrics results/metrics/tiny/t_draft=4.parquet ...

Which figures there are and their panels are data (configs/studies.yaml: `title`, `panels`, each
{parameter, label, show: fid | fid_revised | pr}), resolved by the plan into the figure's spec
(drr.workflow.report_spec); the code knows no figure by name. Rows come only from the files given
with --metrics (the rule's declared inputs).

Ours are lines with markers and error bars (each row's 95% interval, drr.metrics.intervals; a row
without one gets no bar, and the caption says so); the few points the paper gives as numbers
(configs/published.yaml, `figures`) are open markers labelled with their source, drawn only when
our experiment is the one the paper measured (otherwise the scales differ and the caption says
so). The PDF is written beside the PNG (same name, .pdf). Both are written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from drr.core.errors import DrrError, user_errors
from drr.reports.plotting import pyplot, save_png_pdf
from drr.reports.results import Results, read_spec


def series(res: Results, parameter: str):
    """[(x, revised row, draft row)] of the figure's cells varying `parameter`, sorted by x."""
    out = []
    for cell in res.cells:
        values = cell.values
        if set(values) != {parameter}:
            continue
        out.append((values[parameter], res.row(cell.experiment, cell.variant, "revised"),
                    res.row(cell.experiment, cell.variant, "draft")))
    return sorted(out, key=lambda t: t[0])


def _y(rows, field):
    return [r.get(field) if r is not None else None for r in rows]


def _plot(ax, xs, rows, metric, fmt, color, label, bars):
    """Our points with error bars from the rows' `<metric>_lo`/`_hi` (none where a row has none);
    adds (points with an interval, points) to `bars`."""
    ys = [float("nan") if y is None else y for y in _y(rows, metric)]
    below, above, have = [], [], 0
    for y, r in zip(ys, rows):
        lo, hi = (r or {}).get(f"{metric}_lo"), (r or {}).get(f"{metric}_hi")
        if lo is None or hi is None or y != y:
            below.append(0.0)
            above.append(0.0)
        else:
            below.append(max(y - lo, 0.0))
            above.append(max(hi - y, 0.0))
            have += 1
    bars[0] += have
    bars[1] += len(ys)
    ax.errorbar(xs, ys, yerr=[below, above], fmt=fmt, color=color, capsize=3, elinewidth=1, label=label)


def build(res: Results):
    """(matplotlib figure, title) of the figure the spec describes; the caller saves or closes it."""
    figure = res.name
    if res.spec["kind"] != "figure":
        raise DrrError(f"spec of {figure}: not a figure (kind {res.spec['kind']!r})")
    spec = res.entry
    plt = pyplot()
    cells = res.cells
    if not cells:
        raise DrrError(f"{figure}: suite '{res.suite_name}' has no "
                       f"'{spec['experiment']}' experiment")
    experiment = cells[0].experiment
    published = res.published  # the figure's points, the experiment they were measured on, a note
    compare = res.is_paper_experiment(experiment, published.get("experiment"))
    points = published.get("points", []) if compare else []
    panels = spec["panels"]
    bars = [0, 0]  # points of ours with an interval, points of ours
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    n = None
    for ax, panel in zip(axes[0], panels):
        param, xlabel, what = panel["parameter"], panel["label"], panel["show"]
        data = series(res, param)
        xs = [d[0] for d in data]
        revised, drafts = [d[1] for d in data], [d[2] for d in data]
        n = revised[0]["n_samples"] if revised else n
        mine = [p for p in points if p.get("panel", param) == param]
        if what in ("fid", "fid_revised"):
            _plot(ax, xs, revised, "fid", "o-", "C0", "ours, revised", bars)
            if what == "fid":
                _plot(ax, xs, drafts, "fid", "s--", "C1", "ours, drafts", bars)
            else:  # the revise phase does not change the drafts: one level for every T_revise
                _plot(ax, xs, drafts, "fid", ":", "C1", "ours, drafts (before revising)", bars)
            for phase, color in (("revised", "C0"), ("draft", "C1")):
                pts = [p for p in mine if p.get("phase") == phase and "fid" in p]
                if pts:
                    ax.plot([p["x"] for p in pts], [p["fid"] for p in pts], "o" if phase == "revised" else "s",
                            mfc="none", color=color, ms=9,
                            label=f"paper, {phase} ({'; '.join(sorted({p['source'] for p in pts}))})")
            ax.set_ylabel("FID ↓")
        else:
            _plot(ax, xs, revised, "precision", "o-", "C2", "ours, precision", bars)
            _plot(ax, xs, revised, "recall", "s-", "C3", "ours, recall", bars)
            for key, color in (("precision", "C2"), ("recall", "C3")):
                pts = [p for p in mine if key in p]
                if pts:
                    ax.plot([p["x"] for p in pts], [p[key] for p in pts], "D", mfc="none", color=color,
                            ms=9, label=f"paper, {key} ({'; '.join(sorted({p['source'] for p in pts}))})")
            ax.set_ylabel("precision / recall ↑")
        if param in ("t_draft", "t_revise") and xs and min(xs) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    lines = [spec["title"], f"{experiment}, {n:,} samples per point"]
    with_bars, total = bars
    lines.append("error bars: 95% half-sampling intervals (drr.metrics.intervals)\n"
                 "of the expected value at the row's sample count;\n"
                 "paired differences between points: reports/claims.md"
                 if with_bars == total else "no error bars: the rows have no intervals" if with_bars == 0
                 else f"error bars: 95% half-sampling intervals ({total - with_bars} of {total} points have none)")
    if not compare:
        lines.append("small-scale run: not comparable to the paper (no published points)")
    elif published.get("note"):
        lines.append(published["note"])  # where the paper's own numbers disagree
    return fig, "\n".join(lines)


def draw(res: Results, out: Path) -> None:
    fig, title = build(res)
    save_png_pdf(fig, out, title)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, type=Path,
                   help="the figure's spec (results/reports/<figure>.spec.json, drr.workflow.report_spec)")
    p.add_argument("--out", required=True, type=Path, help="PNG to write (the PDF goes beside it)")
    p.add_argument("--metrics", nargs="*", default=[], type=Path,
                   help="the metrics files of the figure's cells (the spec's `runs`)")
    p.add_argument("--root", default=".", type=Path, help="folder the relative --metrics paths are in")
    args = p.parse_args(argv)
    if args.out.suffix != ".png":
        raise SystemExit(f"error: --out {args.out}: expected a .png path")
    with user_errors():
        spec = read_spec(args.spec, ("figure",))
        draw(Results(spec, args.metrics, (), args.root, where=str(args.spec)), args.out)
        print(f"wrote {args.out} and {args.out.with_suffix('.pdf')}")


if __name__ == "__main__":
    main()
