"""Figures for the backtracking experiment, drawn from plain tables (naming scheme:
``bt_assets/lib/README.md``).

Every builder takes its table (a polars DataFrame or a list of dict rows) plus keyword options and
RETURNS a ``matplotlib.figure.Figure`` without writing anything; ``save(fig, path)`` writes the PNG
(dpi 150, tight bounding box) and clears the figure; ``preview_markdown(path, title)`` embeds a PNG in
Dagster metadata. Input that cannot be drawn (no rows, an absent column, a value that is no number,
every plotted value null/NaN) raises ``FigureDataError`` (a ``ValueError``) naming the figure and the
columns.

- ``common``: style, colours, strict column reading, percent bars and their zoom rule, save, preview
- ``phase1``: rate by variant / condition, formatting effect, accuracy by BT, logit lens, ablation scan
- ``phase2``: baseline summary, subset sweep, scale trade-off, continuation effect
- ``frontier``: every intervention family on one BT-rate / accuracy / tokens frontier
- ``onsets``: onset phrases per sweep cell, onset resamples (clean vs ablated at the onset)
"""

from bt_assets.lib.plots.common import (
    DPI,
    FigureDataError,
    preview_markdown,
    role_color,
    save,
)
from bt_assets.lib.plots.frontier import tradeoff_frontier
from bt_assets.lib.plots.onsets import onset_phrases, onset_resamples
from bt_assets.lib.plots.phase1 import (
    ablation_importance,
    accuracy_by_bt,
    bt_rate_by_variant,
    by_condition,
    formatting_effect,
    logit_lens,
)
from bt_assets.lib.plots.phase2 import (
    continuation_effect,
    phase2_baseline_summary,
    scale_tradeoff,
    subset_sweep,
)

__all__ = [
    "DPI",
    "FigureDataError",
    "ablation_importance",
    "accuracy_by_bt",
    "bt_rate_by_variant",
    "by_condition",
    "continuation_effect",
    "formatting_effect",
    "logit_lens",
    "onset_phrases",
    "onset_resamples",
    "phase2_baseline_summary",
    "preview_markdown",
    "role_color",
    "save",
    "scale_tradeoff",
    "subset_sweep",
    "tradeoff_frontier",
]
