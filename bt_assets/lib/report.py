"""Markdown reports whose every number, and every sentence of finding, is computed from the assets."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def interval(lo: float | None, hi: float | None, scale: float = 100.0, unit: str = "%") -> str:
    if lo is None or hi is None or any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return ""
    return f" [{scale * lo:.1f}, {scale * hi:.1f}]{unit}" if unit == "%" else f" [{lo:.2f}, {hi:.2f}]"


def num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def md_table(df: pl.DataFrame, formats: Mapping[str, str] | None = None) -> str:
    """A markdown table; ``formats`` maps a column to 'pct', 'f2' or 'int'."""
    formats = formats or {}
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for row in df.iter_rows(named=True):
        cells = []
        for c, v in row.items():
            f = formats.get(c)
            cells.append(pct(v) if f == "pct" else num(v) if f == "f2" else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def provenance_block(prov: Mapping[str, str]) -> str:
    return "\n".join(f"- **{k}**: `{v}`" for k, v in prov.items())


def figures_block(figures: Sequence[tuple[str, Path]], report_dir: Path) -> str:
    out = []
    for title, path in figures:
        if Path(path).exists():
            rel = os.path.relpath(Path(path).resolve(), report_dir.resolve())
            out.append(f"### {title}\n\n![{title}]({rel})\n")
        else:
            out.append(f"### {title}\n\n(figure not produced: {path})\n")
    return "\n".join(out)


def ci_excludes(lo: float, hi: float, value: float) -> bool:
    return not (math.isnan(lo) or math.isnan(hi)) and not (lo <= value <= hi)


def lift_finding(s: Mapping[str, float | None], original_lift: float | None) -> str:
    if not s["n"]:
        return "No baseline completions: nothing to say about accuracy and backtracking."
    lift, lo, hi = s["lift"], s["lift_lo"], s["lift_hi"]
    base = (
        f"Among {s['n']} baseline completions, accuracy is {pct(s['acc_with_bt'])} with backtracking "
        f"and {pct(s['acc_without_bt'])} without"
    )
    if lift is None:
        return base + "; the lift is undefined (no correct completion without backtracking)."
    if ci_excludes(lo, hi, 1.0):
        verdict = "higher" if lift > 1 else "lower"
        text = (
            f"{base}: a lift of {lift:.2f}x (95% problem-bootstrap interval {lo:.2f}-{hi:.2f}); "
            f"completions that backtrack are {verdict} in accuracy and the interval excludes 1."
        )
    else:
        text = (
            f"{base}: a lift of {lift:.2f}x whose 95% interval ({num(lo)}-{num(hi)}) includes 1, so these "
            "data do not show that backtracking completions are more (or less) accurate."
        )
    if original_lift is not None:
        text += (
            f" The original pipeline's grader and mixed rows gave {original_lift:.2f}x on the same events."
        )
    return text


def lens_finding(lens: pl.DataFrame) -> str:
    if lens.height == 0 or lens["n_bt"].max() in (None, 0):
        return "No BT events were available for the logit lens."
    sep = lens.filter(pl.col("ci_low_bt") > pl.col("ci_high_control"))
    last = lens.sort("layer").tail(1).row(0, named=True)
    gap = last["mean_target_logit_bt"] - last["mean_target_logit_control"]
    n_bt, n_ctl = int(lens["n_bt"][0]), int(lens["n_control"][0])
    if sep.height:
        first = int(sep["layer"].min())
        return (
            f"The onset token's logit separates BT events (n={n_bt}) from position-matched controls "
            f"(n={n_ctl}, scored on the same token) from layer {first} on (non-overlapping 95% intervals "
            f"in {sep.height} of {lens.height} layers); at the last layer the gap is {gap:.2f} logits."
        )
    return (
        f"BT events (n={n_bt}) and controls (n={n_ctl}) are not separated at any layer by their 95% "
        f"intervals; the last-layer gap is {gap:.2f} logits."
    )


def scan_finding(scan: pl.DataFrame, selected: Mapping[str, Sequence[int]]) -> str:
    scan = scan.drop_nans()
    if scan.height == 0:
        return "No BT events were available for the ablation scan."
    top = scan.sort("delta_logit_mean").head(3)
    parts = []
    for r in top.iter_rows(named=True):
        sig = (
            "interval excludes 0"
            if ci_excludes(r["delta_logit_ci_low"], r["delta_logit_ci_high"], 0)
            else "interval includes 0"
        )
        parts.append(
            f"{r['component']} {r['layer']} ({r['delta_logit_mean']:+.2f} logits, "
            f"{r['delta_logprob_mean']:+.2f} log-prob; {sig})"
        )
    pos = scan.sort("delta_logit_mean", descending=True).row(0, named=True)
    return (
        f"Zeroing one component at the prediction position lowers the onset token most for "
        f"{'; '.join(parts)} (n={int(scan['n_events'][0])} events). The largest increase is "
        f"{pos['component']} {pos['layer']} ({pos['delta_logit_mean']:+.2f}). Selected layers: "
        + ", ".join(f"{k} {list(v)}" for k, v in selected.items())
        + "."
    )


def condition_finding(rates: pl.DataFrame) -> str:
    rows = {r["condition"]: r for r in rates.iter_rows(named=True)}
    base = rows.get("baseline")
    if not base or not base["n"]:
        return "No baseline completions for the condition comparison."
    out = []
    for cond, r in rows.items():
        if cond == "baseline" or not r["n"]:
            continue
        out.append(
            f"{cond}: BT {pct(r['bt_rate'])} ({100 * (r['bt_rate'] - base['bt_rate']):+.1f} points), "
            f"accuracy {pct(r['accuracy'])} ({100 * (r['accuracy'] - base['accuracy']):+.1f} points)"
        )
    if not out:
        return f"Only the baseline condition was generated (BT {pct(base['bt_rate'])})."
    return (
        f"Against the baseline (BT {pct(base['bt_rate'])}, accuracy {pct(base['accuracy'])}, n={base['n']}): "
        + "; ".join(out)
        + ". A targeted effect is only specific if it exceeds the random-layer control's."
    )


def sweep_finding(results: Mapping) -> str:
    base = results["baseline"]
    if not base["n"]:
        return "The baseline sweep cell is empty."
    lines = []
    for r in results["subset"]:
        if r["subset"] == "baseline":
            continue
        sig = (
            "" if not ci_excludes(r["delta_bt_lo"], r["delta_bt_hi"], 0) else " (paired interval excludes 0)"
        )
        lines.append(
            f"{r['subset']} ({r['num_components']} components): BT {pct(r['bt_rate'])}, "
            f"paired change {100 * r['delta_bt']:+.1f} points [{100 * r['delta_bt_lo']:.1f}, "
            f"{100 * r['delta_bt_hi']:.1f}]{sig}, accuracy {pct(r['accuracy'])}"
        )
    text = (
        f"Baseline BT {pct(base['bt_rate'])}, accuracy {pct(base['accuracy'])} (n={base['n']}). "
        + "; ".join(lines)
    )
    best = results.get("best_tradeoff")
    if best:
        text += (
            f". Best trade-off: {best['cell']} cuts BT by {pct(best['relative_bt_reduction'])} (relative) "
            f"while keeping accuracy {pct(best['accuracy'])} >= the floor {pct(best['accuracy_floor'])}."
        )
    else:
        text += ". No ablated cell keeps accuracy above the configured floor while reducing BT."
    return text


def scale_finding(results: Mapping) -> str:
    rows = [r for r in results["scale"] if r["n"]]
    if not rows:
        return "No scale-sweep cells."
    ordered = sorted(rows, key=lambda r: r["scale"])
    mono = all(a["bt_rate"] <= b["bt_rate"] for a, b in zip(ordered, ordered[1:], strict=False))
    span = ", ".join(f"{r['scale']:g} -> {pct(r['bt_rate'])}" for r in ordered)
    return (
        f"BT rate by scale: {span}; the dose-response is {'monotone' if mono else 'not monotone'} in the "
        "scale. Accuracy by scale: "
        + ", ".join(f"{r['scale']:g} -> {pct(r['accuracy'])}" for r in ordered)
        + "."
    )


def continuation_finding(summary: pl.DataFrame) -> str:
    if summary.height == 0 or "p_onset_mean" not in summary.columns:
        return "No BT events for the continuation ablation."
    rows = {r["scale"]: r for r in summary.iter_rows(named=True)}
    clean = rows.get(1.0)
    parts = [
        f"scale {s:g}: P(onset) {pct(r['p_onset_mean'])}, synonym top-1 {pct(r['synonym_share'])}"
        for s, r in sorted(rows.items())
        if s != 1.0
    ]
    head = f"Clean P(onset) {pct(clean['p_onset_mean'])} (n={clean['n']})" if clean else "No clean row"
    return head + "; " + "; ".join(parts) + "."
