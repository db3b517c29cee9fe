"""matplotlib without a display, and figures saved as PNG + PDF atomically."""

from __future__ import annotations

from pathlib import Path

from drr.core.files import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (jobs run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png_pdf(fig, out: Path, title: str | None, title_size: int = 9, dpi: int = 120,
                 tight: bool = True) -> None:
    """Title (None: the caller placed it), tight layout (unless the caller laid the figure out),
    then `out` (.png) and the same name as .pdf, each written atomically; the figure is closed."""
    plt = pyplot()
    if title is not None:
        fig.suptitle(title, fontsize=title_size)
    if tight:
        fig.tight_layout()
    for path in (Path(out), Path(out).with_suffix(".pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=dpi)
    plt.close(fig)
