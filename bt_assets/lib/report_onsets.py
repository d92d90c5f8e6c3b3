"""Findings about the backtracking onset under an intervention, written from the numbers: the teacher-
forced continuation ablation (one position) and the onset resamples (clean vs ablated for the first k
decode steps). Every direction cites its paired interval and its event/problem counts."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from bt_assets.lib.report import interval, md_table, pct, points, verdict
from bt_assets.lib.stats import Evidence


def continuation_finding(summary: pl.DataFrame, evidence: Evidence) -> str:
    """P(onset token family) with its 95% interval on the clean run (scale 1.0), and per ablation scale
    the PAIRED clean-minus-ablated drop of it (``p_onset_drop_mean`` with its problem-clustered interval)
    and what that interval shows (a direction only with ``evidence``: events and problems), plus the
    share of events whose top-1 token became a synonym."""
    if summary.height == 0 or "p_onset_mean" not in summary.columns:
        return "No BT events for the continuation ablation."
    rows = {r["scale"]: r for r in summary.iter_rows(named=True)}
    clean = rows.get(1.0)

    def p_onset(r: Mapping) -> str:
        return (
            f"P(onset family) {pct(r['p_onset_mean'])}{interval(r['p_onset_mean_lo'], r['p_onset_mean_hi'])}"
        )

    def drop(r: Mapping) -> str:
        lo, hi = r["p_onset_drop_mean_lo"], r["p_onset_drop_mean_hi"]
        change = points(-r["p_onset_drop_mean"], None if hi is None else -hi, None if lo is None else -lo)
        shown = verdict(
            None if hi is None else -hi,
            None if lo is None else -lo,
            r["n"],
            r["n_problems"],
            evidence,
            "BT events",
        )
        return f"change vs clean {change} ({shown})"

    parts = [
        f"scale {s:g}: {p_onset(r)}, {drop(r)}, synonym top-1 {pct(r['synonym_share'])}"
        f"{interval(r['synonym_share_lo'], r['synonym_share_hi'])}"
        for s, r in sorted(rows.items())
        if s != 1.0
    ]
    head = f"Clean {p_onset(clean)} (n={clean['n']} events)" if clean else "No clean row"
    return (
        head
        + "; "
        + "; ".join(parts)
        + ". Changes are paired per event (the same prefix clean and ablated) with problem-clustered 95% "
        "intervals; scales are not compared with one another."
    )


def resample_finding(summary: Mapping, evidence: Evidence, first_k_steps: int, window_tokens: int) -> str:
    """The onset resamples: stability (the clean P(BT within the window)), the ablated rate, the PAIRED
    change (ablated minus clean, same event and sampling keys) with its problem-bootstrap interval and
    what it shows (a direction only with ``evidence``), the opening phrases of each condition, and the
    accuracy of finished continuations with its interval (descriptive: no paired test)."""
    conds, paired = summary.get("conditions") or {}, summary.get("paired")
    if not conds or not paired:
        return "No BT events were resampled."
    clean, abl = conds["clean"], conds["ablated"]

    def rate(r: Mapping) -> str:
        return f"{pct(r['bt_rate'])}{interval(r['bt_rate_lo'], r['bt_rate_hi'])} ({r['bt_count']}/{r['n']})"

    lo, hi = paired["delta_bt_lo"], paired["delta_bt_hi"]
    opening = f"clean: {clean['first_phrases'] or 'none'}; ablated: {abl['first_phrases'] or 'none'}"

    def accuracy(r: Mapping) -> str:
        ci = interval(r["accuracy_finished_lo"], r["accuracy_finished_hi"])
        return f"{pct(r['accuracy_finished'])}{ci} of {r['n_finished']}"

    finished = f"clean {accuracy(clean)}, ablated {accuracy(abl)}"
    shown = verdict(lo, hi, paired["bt_pairs"], paired["bt_pair_problems"], evidence, "pairs with a BT event")
    return (
        f"Resampled from the prefix before {clean['n_events']} BT onsets ({clean['n_problems']} problems): "
        f"the clean continuation backtracks again within {window_tokens} tokens in {rate(clean)} (the "
        f"onsets' stability); with the subset ablated for the first {first_k_steps} step(s), {rate(abl)}: "
        f"paired change {points(paired['delta_bt'], lo, hi)} over {paired['n_pairs']} pairs ({shown}). "
        f"Opening phrases, {opening}. Accuracy among finished continuations: {finished} (descriptive)."
    )


CONTINUATION_COLUMNS = [
    "scale",
    "n",
    "n_problems",
    "p_onset_mean",
    "p_onset_mean_lo",
    "p_onset_mean_hi",
    "p_onset_drop_mean",
    "p_onset_drop_mean_lo",
    "p_onset_drop_mean_hi",
    "logit_drop_mean",
    "logit_drop_mean_lo",
    "logit_drop_mean_hi",
    "synonym_share",
    "synonym_share_lo",
    "synonym_share_hi",
]


def continuation_table(summary: pl.DataFrame) -> str:
    """The continuation summary per scale: P(onset family) and its paired clean-minus-ablated drop
    (percent), the onset-logit drop, with problem-clustered 95% intervals, and the synonym top-1 share."""
    pct_cols = [c for c in CONTINUATION_COLUMNS if c.startswith(("p_", "synonym_share"))]
    fmt = {**dict.fromkeys(pct_cols, "pct"), **{c: "f2" for c in CONTINUATION_COLUMNS if "logit" in c}}
    return md_table(summary.select(CONTINUATION_COLUMNS), fmt)


RESAMPLE_FIGURES = [("Onset resamples", "phase2_onset_resamples")]
RESAMPLE_COLUMNS = [
    "condition",
    "n",
    "n_events",
    "n_problems",
    "bt_count",
    "bt_rate",
    "bt_rate_lo",
    "bt_rate_hi",
    "n_finished",
    "accuracy_finished",
    "accuracy_finished_lo",
    "accuracy_finished_hi",
    "first_phrases",
]


def resample_section(summary: Mapping) -> str:
    """The onset resamples per condition (P(BT within the window) and accuracy among finished
    continuations, percent, 95% bootstrap intervals over problems) and the interval method."""
    rows = [{"condition": c, **r} for c, r in (summary.get("conditions") or {}).items()]
    if not rows:
        return "\n## Onset resamples\n\nnone"
    fmt = {c: "pct" for c in RESAMPLE_COLUMNS if c.startswith(("bt_rate", "accuracy"))}
    table = md_table(pl.DataFrame(rows).select(RESAMPLE_COLUMNS), fmt)
    return f"\n## Onset resamples\n\n{table}\n\n{summary['interval_method']}."
