"""Markdown reports whose every number, and every sentence of finding, is computed from the assets.

The findings read the tables under the naming scheme of ``bt_assets/lib/README.md`` (an interval of
``<name>`` is ``<name>_lo`` / ``<name>_hi``; no fallback between spellings: a missing column or key raises
an error naming it). A direction (an interval that excludes 1 or 0, layers that separate) is only claimed
when there are enough BT events from enough problems (``stats.Evidence``); otherwise the numbers are
described and the shortfall is named.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from bt_assets.lib.stats import Evidence


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage ("n/a" for None or nan)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def interval(lo: float | None, hi: float | None, scale: float = 100.0, unit: str = "%") -> str:
    """An interval as ``" [lo, hi]%"`` (fractions times ``scale``) or ``" [lo, hi]"`` for another unit;
    empty when either end is undefined."""
    if lo is None or hi is None or any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return ""
    return f" [{scale * lo:.1f}, {scale * hi:.1f}]{unit}" if unit == "%" else f" [{lo:.2f}, {hi:.2f}]"


def num(x: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals ("n/a" for None or nan)."""
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
    """One markdown bullet per provenance entry (model, revision, config hash, ...)."""
    return "\n".join(f"- **{k}**: `{v}`" for k, v in prov.items())


def figures_block(figures: Sequence[tuple[str, Path]], report_dir: Path) -> str:
    """Each figure embedded by its path relative to the report, or a line saying it was not produced."""
    out = []
    for title, path in figures:
        if Path(path).exists():
            rel = os.path.relpath(Path(path).resolve(), report_dir.resolve())
            out.append(f"### {title}\n\n![{title}]({rel})\n")
        else:
            out.append(f"### {title}\n\n(figure not produced: {path})\n")
    return "\n".join(out)


def lift_finding(s: Mapping[str, float | None], original_lift: float | None, evidence: Evidence) -> str:
    """Accuracy with vs without backtracking from ``rates.bt_accuracy_summary``'s summary (``n``,
    ``n_bt``, ``n_bt_problems``, ``acc_with_bt``, ``acc_without_bt``, ``lift``, ``lift_lo/_hi``); a
    direction is claimed only when the problem-bootstrap interval of the lift excludes 1 and there are
    enough BT events (``evidence``)."""
    if not s["n"]:
        return "No baseline completions: nothing to say about accuracy and backtracking."
    lift, lo, hi = s["lift"], s["lift_lo"], s["lift_hi"]
    k, probs = int(s["n_bt"]), int(s["n_bt_problems"])
    base = (
        f"Among {s['n']} baseline completions ({k} with backtracking, from {probs} problems), accuracy is "
        f"{pct(s['acc_with_bt'])} with backtracking and {pct(s['acc_without_bt'])} without"
    )
    if lift is None:
        text = base + "; the lift is undefined (no completion with backtracking, or none correct without)."
    elif not evidence.enough(k, probs):
        text = (
            f"{base}: a lift of {lift:.2f}x (95% problem-bootstrap interval {num(lo)}-{num(hi)}), "
            f"{evidence.shortfall(k, probs)}, so no direction is claimed."
        )
    elif lo is not None and hi is not None and lo == hi:
        text = (
            f"{base}: a lift of {lift:.2f}x; its problem-bootstrap interval is zero-width "
            f"({lo:.2f}-{hi:.2f}: every resample gives the same value), so no direction is claimed."
        )
    elif evidence.excludes(lo, hi, 1.0, k, probs):
        verdict = "higher" if lift > 1 else "lower"
        text = (
            f"{base}: a lift of {lift:.2f}x (95% problem-bootstrap interval {lo:.2f}-{hi:.2f}); "
            f"completions that backtrack are {verdict} in accuracy and the interval excludes 1."
        )
    else:
        text = (
            f"{base}: a lift of {lift:.2f}x whose 95% interval ({num(lo)}-{num(hi)}) does not exclude 1, so "
            "these data do not show that backtracking completions are more (or less) accurate."
        )
    if original_lift is not None:
        text += (
            f" The original pipeline's grader and mixed rows gave {original_lift:.2f}x on the same events."
        )
    return text


def lens_finding(lens: pl.DataFrame, n_problems: int, evidence: Evidence) -> str:
    """Where BT events and position-matched controls separate by their 95% t-intervals: layers where
    ``mean_target_logit_bt_lo`` > ``mean_target_logit_control_hi`` (events from ``n_problems``
    problems); with too few events only the last-layer gap of the means is described."""
    if lens.height == 0 or lens["n_bt"].max() in (None, 0):
        return "No BT events were available for the logit lens."
    last = lens.sort("layer").tail(1).row(0, named=True)
    gap = last["mean_target_logit_bt"] - last["mean_target_logit_control"]
    n_bt, n_ctl = int(lens["n_bt"][0]), int(lens["n_control"][0])
    if not evidence.enough(n_bt, n_problems):
        return (
            f"Logit lens on {n_bt} BT events and {n_ctl} position-matched controls: the last-layer gap "
            f"in the onset token's logit is {gap:.2f}; {evidence.shortfall(n_bt, n_problems)}, so no "
            "layer is said to separate them."
        )
    sep = lens.filter(pl.col("mean_target_logit_bt_lo") > pl.col("mean_target_logit_control_hi"))
    if sep.height:
        first = int(sep["layer"].min())
        return (
            f"The onset token's logit separates BT events (n={n_bt}, {n_problems} problems) from "
            f"position-matched controls (n={n_ctl}, scored on the same token) from layer {first} on "
            f"(non-overlapping 95% intervals in {sep.height} of {lens.height} layers); at the last layer "
            f"the gap is {gap:.2f} logits."
        )
    return (
        f"BT events (n={n_bt}, {n_problems} problems) and controls (n={n_ctl}) are not separated at any "
        f"layer by their 95% intervals; the last-layer gap is {gap:.2f} logits."
    )


def scan_finding(
    scan: pl.DataFrame, selected: Mapping[str, Sequence[int]], n_problems: int, evidence: Evidence
) -> str:
    """The components whose zeroing at the prediction position lowers the onset token most
    (``delta_logit_mean``, over ``n_events`` events), with whether each 95% t-interval
    ``delta_logit_mean_lo/_hi`` excludes 0 (only read with enough events)."""
    scan = scan.filter(pl.col("delta_logit_mean").is_not_nan())
    if scan.height == 0:
        return "No BT events were available for the ablation scan."
    n = int(scan["n_events"][0])
    readable = evidence.enough(n, n_problems)
    parts = []
    for r in scan.sort("delta_logit_mean").head(3).iter_rows(named=True):
        sig = ""
        if readable:
            lo, hi = r["delta_logit_mean_lo"], r["delta_logit_mean_hi"]
            sig = "; interval excludes 0" if evidence.excludes(lo, hi, 0.0, n, n_problems) else "; includes 0"
        parts.append(
            f"{r['component']} {r['layer']} ({r['delta_logit_mean']:+.2f} logits, "
            f"{r['delta_logprob_mean']:+.2f} log-prob{sig})"
        )
    pos = scan.sort("delta_logit_mean", descending=True).row(0, named=True)
    caveat = "" if readable else f" These are descriptive only: {evidence.shortfall(n, n_problems)}."
    return (
        f"Zeroing one component at the prediction position lowers the onset token most for "
        f"{'; '.join(parts)} (n={n} events from {n_problems} problems). The largest increase is "
        f"{pos['component']} {pos['layer']} ({pos['delta_logit_mean']:+.2f}). Selected layers: "
        + ", ".join(f"{k} {list(v)}" for k, v in selected.items())
        + "."
        + caveat
    )


def condition_finding(rates: pl.DataFrame) -> str:
    """Each condition's BT rate and accuracy (``rates.group_rates`` by condition: correct / all rows)
    against the baseline condition's, in percentage points."""
    rows = {r["condition"]: r for r in rates.iter_rows(named=True)}
    base = rows.get("baseline")
    if not base or not base["n"]:
        return "No baseline completions for the condition comparison."
    out = []
    for cond, r in rows.items():
        if cond == "baseline" or not r["n"]:
            continue
        out.append(
            f"{cond}: BT {pct(r['bt_rate'])} ({r['bt_count']}/{r['n']}; "
            f"{100 * (r['bt_rate'] - base['bt_rate']):+.1f} points), "
            f"accuracy {pct(r['accuracy'])} ({100 * (r['accuracy'] - base['accuracy']):+.1f} points)"
        )
    if not out:
        return f"Only the baseline condition was generated (BT {pct(base['bt_rate'])})."
    return (
        f"Against the baseline (BT {pct(base['bt_rate'])} = {base['bt_count']}/{base['n']}, accuracy "
        f"{pct(base['accuracy'])}): "
        + "; ".join(out)
        + ". A targeted effect is only specific if it exceeds the random-layer control's."
    )


def sweep_finding(results: Mapping, evidence: Evidence) -> str:
    """Per subset (``sweep_stats.sweep_tables`` rows): BT rate and the paired change ``delta_bt`` vs the
    baseline cell with its problem-bootstrap interval ``delta_bt_lo/_hi``; 'excludes 0' only when enough
    pairs involve a BT event (``bt_pairs`` from ``bt_pair_problems`` problems); the best trade-off row."""
    base = results["baseline"]
    if not base["n"]:
        return "The baseline sweep cell is empty."
    lines = []
    for r in results["subset"]:
        if r["subset"] == "baseline":
            continue
        k, probs = r["bt_pairs"], r["bt_pair_problems"]
        if not evidence.enough(k, probs):
            sig = f" ({k} pairs with a BT event: too few to test)"
        elif evidence.excludes(r["delta_bt_lo"], r["delta_bt_hi"], 0.0, k, probs):
            sig = " (paired interval excludes 0)"
        else:
            sig = ""
        lines.append(
            f"{r['subset']} ({r['n_components']} components): BT {pct(r['bt_rate'])}, "
            f"paired change {100 * r['delta_bt']:+.1f} points [{100 * r['delta_bt_lo']:.1f}, "
            f"{100 * r['delta_bt_hi']:.1f}]{sig}, accuracy {pct(r['accuracy'])}"
        )
    text = (
        f"Baseline BT {pct(base['bt_rate'])} ({base['bt_count']}/{base['n']}), accuracy "
        f"{pct(base['accuracy'])}. " + "; ".join(lines)
    )
    best = results["best_tradeoff"]
    if best:
        text += (
            f". Best trade-off: {best['cell']} cuts BT by {pct(best['relative_bt_reduction'])} (relative; "
            f"paired change {100 * best['delta_bt']:+.1f} points [{100 * best['delta_bt_lo']:.1f}, "
            f"{100 * best['delta_bt_hi']:.1f}]) while keeping accuracy {pct(best['accuracy'])} >= the floor "
            f"{pct(best['accuracy_floor'])}"
        )
        k, probs = best["bt_pairs"], best["bt_pair_problems"]
        text += "." if evidence.enough(k, probs) else f"; {evidence.shortfall(k, probs)}."
    else:
        text += ". No ablated cell keeps accuracy above the configured floor while reducing BT."
    return text


def scale_finding(results: Mapping, evidence: Evidence) -> str:
    """BT rate and accuracy by scale; the dose-response shape is only named with enough BT events."""
    rows = [r for r in results["scale"] if r["n"]]
    if not rows:
        return "No scale-sweep cells."
    ordered = sorted(rows, key=lambda r: r["scale"])
    span = ", ".join(f"{r['scale']:g} -> {pct(r['bt_rate'])} ({r['bt_count']}/{r['n']})" for r in ordered)
    events = sum(r["bt_count"] for r in ordered)
    if events < evidence.min_events:
        shape = (
            f"with {events} BT events over all scale cells (fewer than {evidence.min_events}), no "
            "dose-response is read from them"
        )
    else:
        mono = all(a["bt_rate"] <= b["bt_rate"] for a, b in zip(ordered, ordered[1:], strict=False))
        shape = f"the BT rate is {'non-decreasing' if mono else 'not monotone'} in the scale"
    return (
        f"BT rate by scale: {span}; {shape}. Accuracy by scale: "
        + ", ".join(f"{r['scale']:g} -> {pct(r['accuracy'])}" for r in ordered)
        + "."
    )


def continuation_finding(summary: pl.DataFrame) -> str:
    """P(onset) with its t-interval (``p_onset_mean_lo/_hi``) on the clean run (scale 1.0) and per
    ablation scale, with the share of events whose top-1 token became a synonym."""
    if summary.height == 0 or "p_onset_mean" not in summary.columns:
        return "No BT events for the continuation ablation."
    rows = {r["scale"]: r for r in summary.iter_rows(named=True)}
    clean = rows.get(1.0)

    def p_onset(r: Mapping) -> str:
        return f"P(onset) {pct(r['p_onset_mean'])}{interval(r['p_onset_mean_lo'], r['p_onset_mean_hi'])}"

    parts = [
        f"scale {s:g}: {p_onset(r)}, synonym top-1 {pct(r['synonym_share'])}"
        for s, r in sorted(rows.items())
        if s != 1.0
    ]
    head = f"Clean {p_onset(clean)} (n={clean['n']} events)" if clean else "No clean row"
    return head + "; " + "; ".join(parts) + "."
