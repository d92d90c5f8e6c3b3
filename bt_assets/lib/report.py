"""Markdown reports whose every number, and every sentence of finding, is computed from the assets.

The findings read the tables under the naming scheme of ``bt_assets/lib/README.md`` (an interval of
``<name>`` is ``<name>_lo`` / ``<name>_hi``; no fallback between spellings: a missing column or key raises
an error naming it). A direction (an interval that excludes 1 or 0, layers that separate) is only claimed
when there are enough BT events from enough problems (``stats.Evidence``); otherwise the numbers are
described and the shortfall is named ("too few to test"). Every sentence that claims a direction or a
difference cites its interval and the event and problem counts it rests on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from bt_assets.lib.stats import Evidence, accuracy_difference, accuracy_split_intervals


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
        f"Among {s['n']} baseline completions ({k} with backtracking, from {probs} "
        f"problem{'s' if probs != 1 else ''}), accuracy is "
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


def points(d: float, lo: float | None = None, hi: float | None = None) -> str:
    """A change of a fraction in percentage points, with its interval when defined:
    ``-5.0 points [-8.0, -2.0]``."""
    return f"{100 * d:+.1f} points{interval(lo, hi).removesuffix('%')}"


def acc_change(r: Mapping) -> str:
    """A sweep cell's paired accuracy change vs the baseline (``delta_acc`` with ``_lo/_hi``)."""
    return points(r["delta_acc"], r["delta_acc_lo"], r["delta_acc_hi"])


def verdict(lo: float | None, hi: float | None, k: int, problems: int, evidence: Evidence, what: str) -> str:
    """What the 95% interval [lo, hi] of a change shows, with the ``k`` events (``what``) from
    ``problems`` problems it rests on: a direction only when ``evidence`` lets the interval be read."""
    counts = f"{k} {what} from {problems} problem{'s' if problems != 1 else ''}"
    if not evidence.enough(k, problems):
        return f"too few to test: {counts}"
    if evidence.excludes(lo, hi, 0.0, k, problems):
        return f"{'an increase' if lo > 0 else 'a reduction'}: the interval excludes 0; {counts}"
    if interval(lo, hi) == "" or lo == hi:
        return f"no usable interval (undefined or zero-width), so no direction is claimed; {counts}"
    return f"the interval includes 0, so no direction is claimed; {counts}"


def layer_ranges(layers: Sequence[int]) -> list[tuple[int, int]]:
    """Layers grouped into runs of consecutive layers: [0, 1, 2, 5, 7, 8] -> [(0, 2), (5, 5), (7, 8)]."""
    runs: list[list[int]] = []
    for layer in sorted(layers):
        if runs and layer == runs[-1][1] + 1:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer])
    return [(a, b) for a, b in runs]


def _lens_values(r: Mapping) -> str:
    kinds = [("BT", "bt"), ("control", "control")]
    return " vs ".join(
        f"{label} {num(r[f'mean_target_logit_{k}'])}"
        f"{interval(r[f'mean_target_logit_{k}_lo'], r[f'mean_target_logit_{k}_hi'], unit='')}"
        for label, k in kinds
    )


def lens_finding(lens: pl.DataFrame, n_problems: int, evidence: Evidence) -> str:
    """Which layers separate BT events from position-matched controls by their 95% intervals (the BT
    interval ``mean_target_logit_bt_lo/_hi`` entirely above, or below, the control's
    ``mean_target_logit_control_lo/_hi``), named as layers and ranges, each range with the intervals of
    its narrowest layer, and the event counts (events from ``n_problems`` problems); with too few events
    only the last layer's values are described."""
    if lens.height == 0 or lens["n_bt"].max() in (None, 0):
        return "No BT events were available for the logit lens."
    last = lens.sort("layer").tail(1).row(0, named=True)
    n_bt, n_ctl = int(lens["n_bt"][0]), int(lens["n_control"][0])
    who = (
        f"{n_bt} BT events from {n_problems} problems and {n_ctl} position-matched controls (each scored "
        "on its event's onset token)"
    )
    tail = f"at the last layer ({last['layer']}) the onset token's logit is {_lens_values(last)}"
    if not evidence.enough(n_bt, n_problems):
        return (
            f"Logit lens on {who}: {tail}; {evidence.shortfall(n_bt, n_problems)}, so no layer is said to "
            "separate them."
        )
    bt_lo, bt_hi = pl.col("mean_target_logit_bt_lo"), pl.col("mean_target_logit_bt_hi")
    ctl_lo, ctl_hi = pl.col("mean_target_logit_control_lo"), pl.col("mean_target_logit_control_hi")
    sides = [
        ("higher", lens.with_columns(margin=bt_lo - ctl_hi)),
        ("lower", lens.with_columns(margin=ctl_lo - bt_hi)),
    ]
    claims, n_sep = [], 0
    for word, df in sides:
        sep = df.filter(pl.col("margin") > 0)
        n_sep += sep.height
        for a, b in layer_ranges(sep["layer"].to_list()):
            r = sep.filter(pl.col("layer").is_between(a, b)).sort("margin").row(0, named=True)
            where = f"layer {a}" if a == b else f"layers {a}-{b} (narrowest at layer {r['layer']})"
            claims.append(f"{word} for BT events at {where}: {_lens_values(r)}")
    if not claims:
        return (
            f"Logit lens on {who}: the 95% intervals of BT events and controls overlap at every one of the "
            f"{lens.height} layers, so no layer separates them; {tail}."
        )
    return (
        f"Logit lens on {who}: the onset token's logit separates them (non-overlapping 95% intervals) in "
        f"{n_sep} of {lens.height} layers; it is "
        + "; ".join(claims)
        + f". Elsewhere the intervals overlap; {tail}."
    )


def scan_finding(
    scan: pl.DataFrame, selected: Mapping[str, Sequence[int]], n_problems: int, evidence: Evidence
) -> str:
    """The components with the most negative mean change of the onset token's logit when scaled by the
    scan's factor (its ``scale`` column: "Zeroing" only for 0) at the prediction position, over
    ``n_events`` events from ``n_problems`` problems, each with its 95% interval
    ``delta_logit_mean_lo/_hi`` and, with enough events, the direction it shows; the largest change."""
    scan = scan.filter(pl.col("delta_logit_mean").is_not_nan())
    if scan.height == 0:
        return "No BT events were available for the ablation scan."
    scales = scan["scale"].unique().to_list()
    if len(scales) != 1:
        raise ValueError(f"the ablation scan mixes scales {sorted(scales)}")
    act = "Zeroing" if scales[0] == 0 else f"Scaling by {scales[0]:g}"
    n = int(scan["n_events"][0])
    readable = evidence.enough(n, n_problems)

    def item(r: Mapping) -> str:
        lo, hi = r["delta_logit_mean_lo"], r["delta_logit_mean_hi"]
        sig = f"; {verdict(lo, hi, n, n_problems, evidence, 'events')}" if readable else ""
        return (
            f"{r['component']} {r['layer']} ({r['delta_logit_mean']:+.2f} logits"
            f"{interval(lo, hi, unit='')}, {r['delta_logprob_mean']:+.2f} log-prob{sig})"
        )

    parts = [item(r) for r in scan.sort("delta_logit_mean").head(3).iter_rows(named=True)]
    pos = scan.sort("delta_logit_mean", descending=True).row(0, named=True)
    caveat = "" if readable else f" These are descriptive only: {evidence.shortfall(n, n_problems)}."
    return (
        f"{act} one component at the prediction position ({n} BT events from {n_problems} problems; 95% "
        f"intervals): the most negative mean changes of the onset token's logit are {'; '.join(parts)}. "
        f"The largest mean change is {item(pos)}. Selected layers: "
        + ", ".join(f"{k} {list(v)}" for k, v in selected.items())
        + "."
        + caveat
    )


def _rate_change(rows: pl.DataFrame, cond: str, col: str, what: str, evidence: Evidence, seed: int) -> str:
    """The change of the rate of ``col`` in condition ``cond`` minus the baseline (``rows``: both), in
    points, with its 95% bootstrap interval over problems and what it shows."""
    in_cond = (rows["condition"] == cond).to_numpy()
    hit = rows[col].fill_null(False).cast(pl.Float64).to_numpy()
    # rate in the condition minus rate in the baseline: the with/without split on ``in_cond``
    lo, hi = accuracy_split_intervals(rows["example_id"].to_numpy(), in_cond, hit, seed=seed)["difference"]
    events = rows.filter(pl.col(col).fill_null(False))
    k, probs = events.height, events["example_id"].n_unique()
    change = accuracy_difference(in_cond, hit)
    return f"{points(change, lo, hi)} ({verdict(lo, hi, k, probs, evidence, what)})"


def condition_finding(rates: pl.DataFrame, view: pl.DataFrame, evidence: Evidence, seed: int) -> str:
    """Each condition's BT rate and accuracy (``rates.group_rates`` by condition: correct / all rows)
    against the baseline condition's: the change in points with a 95% bootstrap interval over problems
    (``seed``) from ``view`` (the rows of those conditions: ``condition``, ``example_id``,
    ``has_backtracking_strict``, ``is_correct``); a direction only with enough BT (or correct)
    completions from enough problems (``evidence``)."""
    rows = {r["condition"]: r for r in rates.iter_rows(named=True)}
    base = rows.get("baseline")
    if not base or not base["n"]:
        return "No baseline completions for the condition comparison."
    out = []
    for cond, r in rows.items():
        if cond == "baseline" or not r["n"]:
            continue
        both = view.filter(pl.col("condition").is_in(["baseline", cond]))
        bt = _rate_change(both, cond, "has_backtracking_strict", "BT completions", evidence, seed)
        acc = _rate_change(both, cond, "is_correct", "correct completions", evidence, seed)
        out.append(
            f"{cond}: BT {pct(r['bt_rate'])} ({r['bt_count']}/{r['n']}), {bt}; accuracy "
            f"{pct(r['accuracy'])} ({r['correct']}/{r['n']}), {acc}"
        )
    if not out:
        return f"Only the baseline condition was generated (BT {pct(base['bt_rate'])})."
    return (
        f"Against the baseline (BT {pct(base['bt_rate'])} = {base['bt_count']}/{base['n']}, accuracy "
        f"{pct(base['accuracy'])} = {base['correct']}/{base['n']}; changes with 95% bootstrap intervals "
        f"over problems, seed {seed}): "
        + "; ".join(out)
        + ". A targeted effect is only specific if it exceeds the random-layer control's."
    )


def paired_text(r: Mapping, evidence: Evidence) -> str:
    """A sweep cell's paired BT change vs the baseline with its interval and what it shows."""
    change = points(r["delta_bt"], r["delta_bt_lo"], r["delta_bt_hi"])
    why = verdict(
        r["delta_bt_lo"],
        r["delta_bt_hi"],
        r["bt_pairs"],
        r["bt_pair_problems"],
        evidence,
        "pairs with a BT event",
    )
    return f"paired change {change} ({why})"


def tradeoff_text(best: Mapping) -> str:
    """The best trade-off (``sweep_stats.best_tradeoff``): its rule, then the cell or why none qualifies."""
    rule = (
        "rule: among ablated cells (scale != 1) whose paired BT change is a reduction with a 95% "
        f"interval below 0, from >= {best['min_events']} pairs with a BT event in >= "
        f"{best['min_problems']} problems, and whose accuracy is >= {best['min_accuracy_fraction']:g} x "
        f"the baseline's (floor {pct(best['accuracy_floor'])}), the largest relative BT reduction"
    )
    if best["cell"] is None:
        return f"Best trade-off ({rule}): none, {best['reason']}."
    return (
        f"Best trade-off ({rule}): {best['cell']} cuts BT by {pct(best['relative_bt_reduction'])} "
        f"(relative; paired change {points(best['delta_bt'], best['delta_bt_lo'], best['delta_bt_hi'])}, "
        f"{best['bt_pairs']} pairs with a BT event from {best['bt_pair_problems']} problems) with accuracy "
        f"{pct(best['accuracy'])} >= the floor {pct(best['accuracy_floor'])}."
    )


def sweep_finding(results: Mapping, evidence: Evidence) -> str:
    """Per subset (``sweep_stats.sweep_tables`` rows): BT rate and the paired change ``delta_bt`` vs the
    baseline cell with its problem-bootstrap interval ``delta_bt_lo/_hi``; a direction only when enough
    pairs involve a BT event (``bt_pairs`` from ``bt_pair_problems`` problems); accuracy with its paired
    change ``delta_acc``; the best trade-off with its rule (``tradeoff_text``)."""
    base = results["baseline"]
    if not base["n"]:
        return "The baseline sweep cell is empty."
    lines = [
        f"{r['subset']} ({r['n_components']} components): BT {pct(r['bt_rate'])} ({r['bt_count']}/{r['n']}), "
        f"{paired_text(r, evidence)}, accuracy {pct(r['accuracy'])} (paired change {acc_change(r)})"
        for r in results["subset"]
        if r["subset"] != "baseline"
    ]
    return (
        f"Baseline BT {pct(base['bt_rate'])} ({base['bt_count']}/{base['n']}), accuracy "
        f"{pct(base['accuracy'])}. " + "; ".join(lines) + ". " + tradeoff_text(results["best_tradeoff"])
    )


def scale_finding(results: Mapping, evidence: Evidence) -> str:
    """BT rate and accuracy by scale, each scale's paired BT change vs the baseline with its interval and
    what it shows (``verdict``); no dose-response is read: every interval compares one scale with the
    baseline, none compares scales with one another."""
    rows = sorted((r for r in results["scale"] if r["n"]), key=lambda r: r["scale"])
    if not rows:
        return "No scale-sweep cells."
    span = "; ".join(
        f"{r['scale']:g} -> BT {pct(r['bt_rate'])} ({r['bt_count']}/{r['n']}), {paired_text(r, evidence)}"
        for r in rows
    )
    acc = ", ".join(f"{r['scale']:g} -> {pct(r['accuracy'])} ({acc_change(r)})" for r in rows)
    return (
        f"Scale sweep of {rows[0]['subset']}, BT rate by scale: {span}. No dose-response (monotone trend) "
        "is claimed: each interval compares one scale with the baseline, not scales with one another. "
        f"Accuracy by scale (paired change): {acc}."
    )
