"""The paper's ablation figures from the cells' metrics: PNG and PDF, published points beside ours.

    python -m drr.reports.figures --suite tiny --figure fig4a --out reports/fig4a.png

fig4a  FID of the drafts and of the revised images vs T_draft
fig4b  precision and recall vs M (M = 0 is the drafts)
fig4c  FID of the revised images vs T_revise
figA1  the VQ experiment: (a) FID vs T_draft, (b) precision and recall vs M

Ours are lines with markers; the few points the paper gives as numbers (configs/published.yaml,
`figures`) are open markers labelled with their source, drawn only when our experiment is the one
the paper measured (otherwise the scales differ and the caption says so). The PDF is written beside
the PNG (same name, .pdf). Both are written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from drr.errors import DrrError, user_errors
from drr.reports.plotting import pyplot, save_png_pdf
from drr.reports.results import Results

PANELS = {  # figure -> [(parameter, x label, what)]; what: "fid" (draft + revised) or "pr"
    "fig4a": [("t_draft", "T_draft (parts of the draft partition)", "fid")],
    "fig4b": [("M", "M (revise passes; 0 = drafts)", "pr")],
    "fig4c": [("t_revise", "T_revise (parts of each revise partition)", "fid_revised")],
    "figA1": [("t_draft", "T_draft", "fid"), ("M", "M (revise passes; 0 = drafts)", "pr")],
}
TITLES = {"fig4a": "Figure 4(a): FID vs T_draft", "fig4b": "Figure 4(b): precision and recall vs M",
          "fig4c": "Figure 4(c): FID vs T_revise",
          "figA1": "Appendix Figure 1: Contextual VQ-Transformer"}


def series(res: Results, figure: str, parameter: str):
    """[(x, revised row, draft row)] of the figure's cells varying `parameter`, sorted by x."""
    out = []
    for cell in res.studies.cells(figure, res.suite):
        values = dict(cell.values)
        if set(values) != {parameter}:
            continue
        out.append((values[parameter], res.row(cell.experiment, cell.name, "revised"),
                    res.row(cell.experiment, cell.name, "draft")))
    return sorted(out, key=lambda t: t[0])


def _y(rows, field):
    return [r.get(field) if r is not None else None for r in rows]


def draw(res: Results, figure: str, out: Path) -> None:
    plt = pyplot()
    cells = res.studies.cells(figure, res.suite)
    if not cells:
        raise DrrError(f"{figure}: suite '{res.suite_name}' has no "
                       f"'{res.studies.reports[figure]['experiment']}' experiment")
    experiment = cells[0].experiment
    published = res.published.get("figures", {})
    compare = res.is_paper_experiment(experiment, published.get("experiment", {}).get(figure))
    points = published.get(figure, []) if compare else []
    panels = PANELS[figure]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    n = None
    for ax, (param, xlabel, what) in zip(axes[0], panels):
        data = series(res, figure, param)
        xs = [d[0] for d in data]
        revised, drafts = [d[1] for d in data], [d[2] for d in data]
        n = revised[0]["n_samples"] if revised else n
        mine = [p for p in points if p.get("panel", param) == param]
        if what in ("fid", "fid_revised"):
            ax.plot(xs, _y(revised, "fid"), "o-", color="C0", label="ours, revised")
            if what == "fid":
                ax.plot(xs, _y(drafts, "fid"), "s--", color="C1", label="ours, drafts")
            else:  # the revise phase does not change the drafts: one level for every T_revise
                ax.plot(xs, _y(drafts, "fid"), ":", color="C1", label="ours, drafts (before revising)")
            for phase, color in (("revised", "C0"), ("draft", "C1")):
                pts = [p for p in mine if p.get("phase") == phase and "fid" in p]
                if pts:
                    ax.plot([p["x"] for p in pts], [p["fid"] for p in pts], "o" if phase == "revised" else "s",
                            mfc="none", color=color, ms=9,
                            label=f"paper, {phase} ({'; '.join(sorted({p['source'] for p in pts}))})")
            ax.set_ylabel("FID ↓")
        else:
            ax.plot(xs, _y(revised, "precision"), "o-", color="C2", label="ours, precision")
            ax.plot(xs, _y(revised, "recall"), "s-", color="C3", label="ours, recall")
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
    scale = "" if compare else "\nsmall-scale run: not comparable to the paper (no published points)"
    save_png_pdf(fig, out, f"{TITLES[figure]}\n{experiment}, {n:,} samples per point{scale}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True, help="suite of configs/workflow.yaml")
    p.add_argument("--figure", required=True, choices=sorted(PANELS))
    p.add_argument("--out", required=True, type=Path, help="PNG to write (the PDF goes beside it)")
    p.add_argument("--root", default=".", type=Path, help="working directory of the workflow run")
    args = p.parse_args(argv)
    if args.out.suffix != ".png":
        raise SystemExit(f"error: --out {args.out}: expected a .png path")
    with user_errors():
        draw(Results(args.suite, args.root), args.figure, args.out)
        print(f"wrote {args.out} and {args.out.with_suffix('.pdf')}")


if __name__ == "__main__":
    main()
