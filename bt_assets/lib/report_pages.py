"""The two report pages (Phase 1, Phase 2) assembled from computed tables: provenance, findings written
from the numbers (``report``), tables with their intervals, figures. Markdown in, markdown out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bt_assets.lib import report as R
from bt_assets.lib.conditions import with_pooled_random
from bt_assets.lib.frontier import FRONTIER_FIGURES
from bt_assets.lib.rates import finished_summary, group_rates, truncation_row
from bt_assets.lib.report_onsets import (
    RESAMPLE_FIGURES,
    continuation_finding,
    continuation_table,
    resample_finding,
    resample_section,
)
from bt_assets.lib.stats import BOOTSTRAP_METHOD, N_BOOT, Evidence, bootstrap_note, mean_note
from bt_assets.lib.sweep_stats import continuation_summary

PHASE1_FIGURES = [
    ("BT rate by variant (baseline)", "bt_rate_by_variant"),
    ("Accuracy with vs without BT (baseline)", "accuracy_by_bt"),
    ("Logit lens: BT vs control", "logit_lens"),
    ("Ablation importance by layer", "ablation_importance"),
    ("BT rate and accuracy by condition", "bt_rate_by_condition"),
    ("Formatting effect (baseline)", "formatting_effect"),
]
PHASE2_FIGURES = [
    ("Deconfounded baseline summary", "phase2_baseline_summary"),
    ("Subset sweep", "phase2_subset_sweep"),
    ("Scale trade-off", "phase2_scale_tradeoff"),
    ("Onset phrases per cell", "phase2_onset_phrases"),
    ("Continuation ablation", "phase2_continuation_effect"),
]
RATE_FORMATS = {"bt_rate": "pct", "accuracy": "pct", "truncated_share": "pct", "accuracy_finished": "pct"}
NO_FINISH_REASON = (
    "truncated_share, n_finished and accuracy_finished are n/a: these events record no finish reason "
    "(imported run), so how many completions stopped at the token cap is unknown"
)
SWEEP_COLUMNS = [
    "subset",
    "scale",
    "n_components",
    "n",
    "bt_rate",
    "accuracy",
    "delta_bt",
    "delta_acc",
    "mean_tokens",
    "median_tokens",
    "truncated_share",
    "n_finished",
    "accuracy_finished",
    "onset_phrases",
]


@dataclass(frozen=True)
class Page:
    """What every page states about itself: title, provenance lines, where its figures are."""

    title: str
    provenance: Mapping[str, str]
    figures_dir: Path
    reports_dir: Path
    evidence: Evidence

    def header(self) -> str:
        return f"# {self.title}\n\n## Provenance\n\n{R.provenance_block(self.provenance)}\n"

    def figures(self, names: Sequence[tuple[str, str]]) -> str:
        return R.figures_block([(t, self.figures_dir / f"{n}.png") for t, n in names], self.reports_dir)


def rate_table(rates: pl.DataFrame, key: str, seed: int | None = None, n_boot: int = N_BOOT) -> str:
    """Counts, rates and 95% intervals (percent) per group (``rates.group_rates`` rows), then a one-line
    note of the interval method: the bootstrap over problems with ``n_boot`` replicates and ``seed``
    (pass the seed ``group_rates`` used; without it the note names the method only)."""

    def ci(name: str) -> pl.Expr:
        lo, hi = (pl.col(f"{name}_{end}") * 100 for end in ("lo", "hi"))
        return pl.format("[{}, {}]", lo.round(1), hi.round(1)).alias(f"{name}_95ci")

    df = rates.with_columns(ci("bt_rate"), ci("accuracy"))
    cols = [
        key,
        "n",
        "n_problems",
        "bt_count",
        "bt_rate",
        "bt_rate_95ci",
        "correct",
        "accuracy",
        "accuracy_95ci",
        *(c for c in ("truncated_share", "n_finished", "accuracy_finished") if c in df.columns),
    ]
    table = R.md_table(df.select(cols), RATE_FORMATS)
    note = bootstrap_note(n_boot, seed) if seed is not None else f"95% intervals: {BOOTSTRAP_METHOD}"
    note += "; accuracy_finished = correct / completions that stopped before the token cap (n_finished)"
    if "truncated_share" not in df.columns or df["truncated_share"].null_count() == df.height:
        note += f". {NO_FINISH_REASON}"
    return f"{table}\n\n{note}."


def truncation_warning(rows: Sequence[Mapping], key: str, warn_share: float, max_new_tokens: int) -> str:
    """The line(s) a page opens with when more than ``warn_share`` of some group's completions stopped at
    the token cap: ``rows`` are ``rates.truncation_row`` / ``sweep_stats.cell_stats`` dicts with the
    group's name under ``key``; '' when no group exceeds it (or none records a finish reason)."""
    out = []
    for r in rows:
        share = r.get("truncated_share")
        if share is None or not share > warn_share:
            continue
        k = r.get("n_finished")
        acc = f"{R.pct(r.get('accuracy_finished'))} ({k} finished)" if k else "undefined (none finished)"
        out.append(
            f"> **Warning: accuracy here measures the token budget: {R.pct(share)} of {r[key]} completions "
            f"stopped at the cap (max_new_tokens {max_new_tokens})**, above the "
            f"{R.pct(warn_share)} limit (`analysis.truncation_warn_share`); their accuracy is that of "
            f"reasoning cut short. Accuracy among finished completions: {acc}."
        )
    return "\n>\n".join(out) + "\n" if out else ""


def finished_lift_text(f: Mapping | None, evidence: Evidence) -> str:
    """The accuracy with vs without backtracking among finished completions (``rates.finished_summary``),
    with its problem-bootstrap interval when there are enough finished BT completions (``evidence``)."""
    if f is None:
        return "Among finished completions: unknown (the events record no finish reason)."
    if not f["n_finished"]:
        return f"Among finished completions: none of {f['n']} finished (all stopped at the token cap)."
    k, probs = f["n_bt"], f["n_bt_problems"]
    text = (
        f"Among finished completions ({f['n_finished']} of {f['n']}; {k} with backtracking from {probs} "
        f"problem{'s' if probs != 1 else ''}): with BT {R.pct(f['acc_with_bt'])}, "
        f"without {R.pct(f['acc_without_bt'])}, lift "
        f"{R.num(f['lift'])}"
    )
    lo, hi = f["lift_lo"], f["lift_hi"]
    if f["lift"] is None or not evidence.enough(k, probs):
        return f"{text}: too few finished to test."
    if lo is None or hi is None or lo == hi or not evidence.excludes(lo, hi, 1.0, k, probs):
        return f"{text} (95% problem-bootstrap interval {R.num(lo)}-{R.num(hi)}, does not exclude 1)."
    return f"{text} (95% problem-bootstrap interval {lo:.2f}-{hi:.2f}, excludes 1)."


def phase1_truncation(view: pl.DataFrame, settings: Mapping) -> str:
    """``truncation_warning`` over the conditions of ``view`` (every Phase-1 completion)."""
    rows = [
        {"condition": c, **truncation_row(view.filter(pl.col("condition") == c))}
        for c in settings["conditions"]
    ]
    return truncation_warning(
        rows, "condition", settings.get("truncation_warn_share", 0.5), settings.get("max_new_tokens", 0)
    )


def rate_sections(page: Page, view: pl.DataFrame, settings: Mapping) -> list[str]:
    """The condition finding (each condition of the ablation variant against its baseline, with paired
    intervals) and the two rate tables: baseline by variant, conditions of the ablation variant."""
    seed = settings["seed"]
    base = view.filter(pl.col("condition") == "baseline")
    abl_view = view.filter(pl.col("variant") == settings["ablation_variant"])
    abl_view, conditions = with_pooled_random(abl_view, settings["conditions"])  # each seed + pooled
    cond = group_rates(abl_view, "condition", conditions, seed=seed)
    by_variant = group_rates(base, "variant", settings["variants"], seed=seed)
    return [
        f"- {R.condition_finding(cond, abl_view, page.evidence, seed)}",
        f"\n## Baseline by variant\n\n{rate_table(by_variant, 'variant', seed)}",
        f"\n## Conditions ({settings['ablation_variant']})\n\n{rate_table(cond, 'condition', seed)}",
    ]


def phase1_page(
    page: Page,
    view: pl.DataFrame,
    metrics_corrected: Mapping,
    seed_compatible_tables: Mapping,
    logit_lens: pl.DataFrame,
    ablation_scan: pl.DataFrame,
    layers: Mapping[str, Mapping],
    event_sample: pl.DataFrame,
    settings: Mapping[str, object],
) -> str:
    """The Phase-1 report. ``view``: every Phase-1 event in the profile's modes; ``layers``: the
    ``selected`` and ``random`` layer sets; ``settings``: variants, conditions, ablation_variant,
    detection, grading, statistic, topk, event_seed, original_format (where the original's files are),
    truncation_warn_share and max_new_tokens (the opening warning when a condition's share of completions
    cut at the token cap exceeds the limit). With ``finish_reason`` in ``view`` the page also gives the
    lift among finished completions and the truncation columns (null without it)."""
    s = metrics_corrected["figure_rows"]["summary"]
    orig = seed_compatible_tables["metrics_v2.json"]["backtracking_vs_accuracy"]["accuracy_lift_ratio"]
    bt_sample = event_sample.filter(pl.col("kind") == "bt")
    n_bt, bt_problems = bt_sample.height, bt_sample["example_id"].n_unique()
    ev = page.evidence
    base = view.filter(pl.col("condition") == "baseline")
    lines = [
        page.header(),
        phase1_truncation(view, settings),
        "## Findings\n",
        f"- Baseline BT rate {R.pct(s['bt_rate'])}{R.interval(s['bt_rate_lo'], s['bt_rate_hi'])} over "
        f"{s['n']} completions ({settings['detection']} detection); accuracy {R.pct(s['accuracy'])}"
        f"{R.interval(s['accuracy_lo'], s['accuracy_hi'])} ({settings['grading']} grading, denominator: "
        "all completions).",
        f"- {R.lift_finding(s, orig, ev)}",
        f"- {finished_lift_text(finished_summary(base, settings['seed']), ev)}",
        f"- {R.lens_finding(logit_lens, bt_problems, ev)}",
        f"- {R.scan_finding(ablation_scan, layers['selected'], bt_problems, ev)}",
        *rate_sections(page, view, settings),
        f"\n## Layers\n\nSelected ({settings['statistic']}, top {settings['topk']}):\n"
        f"```json\n{json.dumps(layers['selected'])}\n```\nRandom controls per seed:\n"
        f"```json\n{json.dumps(layers['random'])}\n```\n"
        f"Teacher-forced stages analysed {n_bt} BT events from {bt_problems} problems, sampled "
        f"at random across problems (seed {settings['event_seed']}).",
        f"\n## Figures\n\n{page.figures(PHASE1_FIGURES)}",
        "\n## Seed-compatible tables\n\nThe original's files, recomputed with its definitions "
        f"(mixed conditions and denominators), are under `{settings['original_format']}`.",
    ]
    return "\n".join(lines) + "\n"


def sweep_table(rows: Sequence[Mapping]) -> str:
    """A sweep table (subset or scale cells) with the paired changes, or 'no cells'."""
    if not rows:
        return "no cells"
    fmt = {**RATE_FORMATS, **{c: "f2" for c in ("delta_bt", "delta_acc", "mean_tokens", "median_tokens")}}
    return R.md_table(pl.DataFrame(rows).select(SWEEP_COLUMNS), fmt)


def phase2_figures(resamples: bool, frontier: bool) -> list[tuple[str, str]]:
    """The Phase-2 figures: the fixed ones, the onset resamples' and the frontier's when configured."""
    return PHASE2_FIGURES + (RESAMPLE_FIGURES if resamples else []) + (FRONTIER_FIGURES if frontier else [])


def phase2_page(
    page: Page,
    metrics_corrected: Mapping,
    sweep_results: Mapping,
    continuation_ablation: pl.DataFrame,
    hook_stats: pl.DataFrame,
    settings: Mapping[str, object] | None = None,
    finished: Mapping | None = None,
    resamples: Mapping | None = None,
    frontier: Mapping | None = None,
) -> str:
    """The Phase-2 report: deconfounded baseline, subset and scale sweeps, continuation, conclusions.
    ``settings``: ``truncation_warn_share`` and ``max_new_tokens`` (the opening warning when a cell's
    share of completions cut at the token cap exceeds the limit); ``finished``: the baseline lift among
    finished completions (``rates.finished_summary``; default the summary's ``finished``);
    ``resamples``: the onset resamples (``summary``: ``onset_resample.resample_summary``,
    ``first_k_steps``, ``window_tokens``), or None when they are not configured; ``frontier``: the
    intervention frontier (``findings``: lines, ``section``: markdown), or None without interventions."""
    s = metrics_corrected["figure_rows"]["summary"]
    cont = continuation_summary(continuation_ablation)
    ev = page.evidence
    settings = settings or {}
    warn = truncation_warning(
        sweep_results["cells"],
        "cell",
        settings.get("truncation_warn_share", 0.5),
        settings.get("max_new_tokens", 0),
    )
    lines = [
        page.header(),
        warn,
        "## Conclusions (computed)\n",
        f"- {R.lift_finding(s, None, ev)}",
        f"- {finished_lift_text(finished if finished is not None else s.get('finished'), ev)}",
        f"- {R.sweep_finding(sweep_results, ev)}",
        f"- {R.scale_finding(sweep_results, ev)}",
        f"- {continuation_finding(cont, page.evidence)}",
        *([f"- {resample_finding(**resamples, evidence=ev)}"] if resamples else []),
        *([f"- {line}" for line in frontier["findings"]] if frontier else []),
        f"\n## Subset sweep\n\n{sweep_table(sweep_results['subset'])}",
        f"\n## Scale sweep\n\n{sweep_table(sweep_results['scale'])}",
        "\nPaired changes (delta_*) are cell minus baseline over the same (problem, sample) pairs; "
        f"accuracy denominator: {sweep_results['accuracy_denominator']}; accuracy_finished = correct / "
        "completions that stopped before the token cap (n_finished). "
        f"{sweep_results['interval_method']} (cell rates and paired changes).",
        "\n## Continuation ablation\n\n"
        + (f"{continuation_table(cont)}\n\n{mean_note()}." if cont.height else "none"),
        *([resample_section(resamples["summary"])] if resamples else []),
        *([frontier["section"]] if frontier else []),
        f"\n## Hook calls\n\n{hook_stats.height} (cell, phase, component, layer) rows; "
        "see the `hook_stats` asset.",
        f"\n## Figures\n\n{page.figures(phase2_figures(bool(resamples), bool(frontier)))}",
    ]
    return "\n".join(lines) + "\n"


ORIGINAL_RUN_FIGURES = [
    ("BT rate by variant (baseline)", "bt_rate_by_variant"),
    ("Accuracy with vs without BT (baseline)", "accuracy_by_bt"),
    ("BT rate and accuracy by condition", "bt_rate_by_condition"),
    ("Formatting effect (baseline)", "formatting_effect"),
    ("Deconfounded baseline summary", "phase2_baseline_summary"),
]
NEEDS_COMPLETIONS = (
    "logit lens, ablation scan, selected/random layers, Phase-2 sweeps, continuation ablation and hook "
    "statistics: they teacher-force or re-generate completions, and the original run exported only its "
    "per-completion events (no completion text or token ids)"
)


def original_headline(metrics_v2: Mapping, corrected: Mapping) -> str:
    """The original's "backtracking lift" (its ``metrics_v2`` baseline rows, graded by its buggy grader,
    B1-B4) beside the lift of the same rows with the stored predictions regraded, with its
    problem-bootstrap interval, each with the counts it rests on."""
    bva = metrics_v2["backtracking_vs_accuracy"]
    w, wo = bva["with_backtracking"], bva["without_backtracking"]
    head, overall = corrected["headline"], corrected["overall"]
    a_w, a_wo = overall["accuracy_with_backtracking"], overall["accuracy_without_backtracking"]
    lo, hi = head["corrected_lift_ci95"]
    ev = head["evidence"]
    verdict = {
        True: "the interval excludes 1",
        False: "the interval includes 1: no evidence that backtracking completions are more accurate",
        None: "too few to test",
    }[head["lift_interval_excludes_1"]]
    return (
        f"The original reported a {bva['accuracy_lift_ratio']:.2f}x backtracking lift on its baseline "
        f"rows: accuracy {R.pct(w['accuracy'])} with backtracking ({w['correct']} of {w['count']}) vs "
        f"{R.pct(wo['accuracy'])} without ({wo['correct']} of {wo['count']}), graded by its buggy grader "
        "(first 'Final:' line, no numeric extraction, split long integers: B1-B4). With the stored "
        f"predictions regraded, the same rows give {R.num(head['corrected_lift'])}x (95% bootstrap over "
        f"problems {R.num(lo)}-{R.num(hi)}): accuracy {R.pct(a_w['rate'])} with backtracking "
        f"({a_w['count']} of {a_w['n']}) vs {R.pct(a_wo['rate'])} without ({a_wo['count']} of "
        f"{a_wo['n']}); {ev['bt_events']} backtracking completions from {ev['bt_problems']} of "
        f"{overall['n_problems']} problems; {verdict}."
    )


def truncation_note(base: pl.DataFrame) -> str:
    """How many baseline rows sit at the longest recorded length. The original recorded the padded
    length of a sample's batch (B7), so this is the share whose batch ran to the token cap."""
    tokens = base["completion_tokens"]
    cap = int(tokens.max() or 0)
    k = int((tokens >= cap).sum())
    return (
        f"{k} of {base.height} baseline rows ({R.pct(k / base.height if base.height else None)}) record "
        f"{cap} completion tokens, the longest length in the run (the original stored the padded batch "
        "length, B7): accuracy here is that of reasoning cut at the token budget, not of finished answers."
    )


def original_run_page(
    page: Page,
    view: pl.DataFrame,
    metrics_corrected: Mapping,
    seed_compatible_tables: Mapping,
    settings: Mapping[str, object],
) -> str:
    """The re-analysed original run: its headline against the regraded one, baseline rates by variant
    and condition, the figures that need only events, and which stages are absent and why."""
    s = metrics_corrected["figure_rows"]["summary"]
    base = view.filter(pl.col("condition") == "baseline")
    lines = [
        page.header(),
        "## Headline\n",
        f"- {original_headline(seed_compatible_tables['metrics_v2.json'], metrics_corrected)}",
        f"- Baseline BT rate {R.pct(s['bt_rate'])}{R.interval(s['bt_rate_lo'], s['bt_rate_hi'])} over "
        f"{s['n']} completions of {s['n_problems']} problems (the original's detector: its events carry "
        "no text to re-detect); regraded accuracy "
        f"{R.pct(s['accuracy'])}{R.interval(s['accuracy_lo'], s['accuracy_hi'])} (denominator: all "
        "completions; 95% percentile bootstrap over problems).",
        f"- Truncation: {truncation_note(base)}",
        *rate_sections(page, view, settings),
        f"\n## Figures\n\n{page.figures(ORIGINAL_RUN_FIGURES)}",
        f"\n## Not built from an imported run\n\n{NEEDS_COMPLETIONS}.",
        "\n## Seed-compatible tables\n\nThe original's files, recomputed from its events with its "
        f"definitions, are under `{settings['original_format']}` (on the shipped run they equal the "
        "original's files value for value: `bt_assets_tests/test_import.py`).",
    ]
    return "\n".join(lines) + "\n"
