"""The HTML report's plots: matplotlib figures written as inline SVG.

Text stays text (`svg.fonttype: none`): the SVG needs no script, font or network, and the
numbers in it stay searchable. matplotlib (the `report` extra) is imported only when a
`Plots` is made, so only reports pay for it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from structune.adapters import AdapterManifest
from structune.errors import UserError


def require_matplotlib() -> None:
    """Check that the HTML report can be drawn, before hours of model runs and not after.

    Raises:
        UserError: matplotlib is not installed; the message says how to install it.
    """
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UserError(
            "the HTML report draws its plots with matplotlib, which is not installed; "
            "install it with: pip install 'structune[report]'"
        )


@dataclass(frozen=True)
class Bars:
    """One panel of bars, a value per model.

    Attributes:
        title: the panel's title.
        values: one per model; None draws no bar and labels it `missing`.
        is_rate: the values are shares between 0 and 1 (a fixed 0 to 1 axis).
        missing: the label of a model without a value.
    """

    title: str
    values: Sequence[float | None]
    is_rate: bool = True
    missing: str = "-"


class Plots:
    def __init__(self) -> None:
        require_matplotlib()
        import matplotlib
        from matplotlib.figure import Figure

        self._figure = Figure
        self._rc_context = matplotlib.rc_context

    def _style(self) -> Any:
        # Text stays text (searchable, small); `$` in a model name is not mathtext;
        # a fixed hash salt and no date make the same report give the same bytes.
        return self._rc_context(
            {"svg.fonttype": "none", "text.parse_math": False, "svg.hashsalt": "structune"}
        )

    def bars(self, names: Sequence[str], panels: Sequence[Bars]) -> str:
        """Side-by-side horizontal bar panels, one row per model, sharing the model axis."""
        with self._style():
            fig = self._figure(figsize=(2.8 * len(panels), 0.9 + 0.45 * len(names)))
            axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
            for ax, panel in zip(axes, panels, strict=True):
                rows = range(len(names))
                ax.barh(rows, [v or 0.0 for v in panel.values], color="#4c78a8")
                ax.set_title(panel.title, fontsize=10)
                ax.set_yticks(rows, names)
                top = max((v or 0.0 for v in panel.values), default=0.0)
                # room on the right for the value labels
                ax.set_xlim(0, 1.25 if panel.is_rate else (top * 1.35 or 1.0))
                if panel.is_rate:
                    ax.set_xticks([0, 0.5, 1])
                for row, v in zip(rows, panel.values, strict=True):
                    label = (
                        panel.missing if v is None else f"{v:.2f}" if panel.is_rate else f"{v:.3g}"
                    )
                    ax.text(v or 0.0, row, f" {label}", va="center", fontsize=8)
            axes[0].invert_yaxis()  # the axes share y: inverting one inverts all
            fig.set_layout_engine("constrained")
            return self._svg(fig)

    def losses(self, adapters: Sequence[AdapterManifest]) -> str:
        with self._style():
            fig = self._figure(figsize=(8, 3.2))
            ax = fig.subplots()
            for m in adapters:
                ax.plot(range(1, len(m.loss_history) + 1), m.loss_history, label=m.id)
            ax.set_xlabel("training step")
            ax.set_ylabel("loss")
            ax.legend(fontsize=8)
            fig.set_layout_engine("constrained")
            return self._svg(fig)

    def _svg(self, fig: Any) -> str:
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
        text = out.getvalue()
        # drop the XML declaration and doctype: the <svg> element goes inline in the page
        return f"<div class=plot>{text[text.index('<svg') :]}</div>"
