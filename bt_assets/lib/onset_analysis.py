"""Teacher-forced tables at the backtracking onset: the event sample, logit lens, ablation scan and
continuation ablation, each as a plain Polars frame (``teacher`` does the forward passes).

Every probe is a completed sequence (the prompt ids the engine fed + the sampled completion ids, where
the event sample carries them; else prompt + completion re-tokenised) with a prediction position ``pred_pos``
whose logits predict the onset token ``target``. BT probes are sampled BT events; controls are
position-matched non-BT completions scored on their event's own onset token (B7, B8). Means over
events carry 95% problem-clustered t-intervals (``<name>_lo/_hi``, ``stats.clustered_mean_interval``:
events of one problem are correlated, so the standard error is clustered by the problem of each
``Event.key`` and the t quantile has G - 1 degrees of freedom, G = problems; none with events from a
single problem). The original's columns (``mean_target_logit_bt``, ``std_bt``,
``delta_wait_logit_mean/_std``, ...) are plain means and event standard deviations, as it wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import torch

from bt_assets.lib import selection, teacher
from bt_assets.lib.generation import encode_prompt
from bt_assets.lib.hooks import COMPONENTS, decoder_layers
from bt_assets.lib.onset_resample import ResampleEvent
from bt_assets.lib.stats import clustered_mean_interval, problem_of
from bt_assets.lib.teacher import Event, encode_full

PROBE_COLUMNS = ["example_id", "sample_id", "variant", "completion", "pred_pos", "target", "onset_token_text"]


def event_sample(view: pl.DataFrame, max_events: int, seed: int, tokenizer=None) -> tuple[pl.DataFrame, dict]:
    """The probes of the teacher-forced stages: a seeded random sample of BT events across all problems
    (B19) and one position-matched non-BT control per event, as rows of ``PROBE_COLUMNS`` + ``kind``
    (``bt`` | ``control``). ``view``: baseline completions (``analysis_view`` + ``completion`` and
    ``completion_tokens``). Also returns counts for the run log and metadata.

    With a ``tokenizer`` and the sampled ``completion_token_ids`` in ``view``, positions index the ids
    the model saw (``stored_positions``) and every probe carries its ``completion_token_ids`` (``probes``
    then feeds prompt ids + those ids); otherwise they index prompt + completion re-tokenised."""
    stored = tokenizer is not None and "completion_token_ids" in view.columns
    bt = view.filter(pl.col("has_backtracking_strict") & (pl.col("pred_pos_in_full") >= 0))
    events = selection.sample_events(bt, max_events, seed)
    if stored:
        events = stored_positions(events, tokenizer).filter(pl.col("pred_pos_in_full") >= 0)
    controls = selection.match_controls(events, view.filter(~pl.col("has_backtracking_strict")), seed)
    ids = ["completion_token_ids"] if stored else []
    ctl_rows = controls.join(
        view.select("example_id", "sample_id", "variant", "completion", *ids),
        left_on=["control_variant", "control_example_id", "control_sample_id"],
        right_on=["variant", "example_id", "sample_id"],
        how="left",
    )
    bt_probes = events.select(
        "example_id",
        "sample_id",
        "variant",
        "completion",
        pl.col("pred_pos_in_full").alias("pred_pos"),
        pl.col("onset_token_id").alias("target"),
        "onset_token_text",
        pl.lit("bt").alias("kind"),
        *ids,
    )
    control_probes = ctl_rows.select(
        pl.col("control_example_id").alias("example_id"),
        pl.col("control_sample_id").alias("sample_id"),
        pl.col("control_variant").alias("variant"),
        "completion",
        "pred_pos",
        "target",
        pl.lit(None, pl.String).alias("onset_token_text"),
        pl.lit("control").alias("kind"),
        *ids,
    )
    counts = {
        "n_bt": events.height,
        "n_control": ctl_rows.height,
        "bt_available": bt.height,
        "n_completions": view.height,
        "problems_covered": events["example_id"].n_unique() if events.height else 0,
    }
    return pl.concat([bt_probes, control_probes], how="vertical_relaxed"), counts


def stored_positions(events: pl.DataFrame, tokenizer) -> pl.DataFrame:
    """``events`` with the onset fields re-pointed at the sampled ids: ``onset_token_in_completion`` = the
    first completion token whose decoded prefix covers ``onset_char`` (``teacher.stored_onset_index``),
    ``pred_pos_in_full`` = ``prompt_tokens`` (the unpadded prompt ids the engine fed) + that index - 1,
    ``onset_token_id``/``_text`` = the sampled token there (all -1 / "" where the onset is not covered)."""
    cols: dict[str, list] = {c: [] for c in ONSET_COLUMNS}
    for r in events.iter_rows(named=True):
        ids = r["completion_token_ids"] or []
        k = teacher.stored_onset_index(tokenizer, ids, r["completion"] or "", r["onset_char"])
        cols["onset_token_in_completion"].append(k)
        cols["onset_token_in_full"].append(r["prompt_tokens"] + k if k >= 0 else -1)
        cols["pred_pos_in_full"].append(r["prompt_tokens"] + k - 1 if k >= 0 else -1)
        cols["onset_token_id"].append(int(ids[k]) if k >= 0 else -1)
        cols["onset_token_text"].append(tokenizer.decode([ids[k]]) if k >= 0 else "")
    return events.with_columns(pl.Series(c, v, events.schema[c]) for c, v in cols.items())


ONSET_COLUMNS = [
    "onset_token_in_completion",
    "onset_token_in_full",
    "pred_pos_in_full",
    "onset_token_id",
    "onset_token_text",
]


def probe_ids(tokenizer, prompt: str, completion: str, stored: Sequence[int] | None, add_bos: bool):
    """The sequence a probe teacher-forces: the prompt ids the engine fed (``encode_prompt``, no padding)
    + the sampled completion ids when stored, else prompt + completion re-tokenised (``encode_full``)."""
    if stored is None:
        return encode_full(tokenizer, prompt, completion, add_bos)
    return (*encode_prompt(tokenizer, prompt, add_bos), *(int(i) for i in stored))


def probes(rows: pl.DataFrame, prompts: pl.DataFrame, tokenizer, add_bos: bool) -> list[Event]:
    """Teacher-forced probes of event-sample rows (``kind`` already chosen), probed at ``pred_pos`` for
    ``target``: prompt ids + the stored ``completion_token_ids`` where the rows carry them (the ids the
    model saw), else prompt + completion re-tokenised; rows whose position falls outside are dropped."""
    text = prompt_text(prompts)
    found = (
        _probe(r, text[(r["variant"], r["example_id"])], tokenizer, add_bos)
        for r in rows.iter_rows(named=True)
    )
    return [ev for ev in found if ev is not None]


def prompt_text(prompts: pl.DataFrame) -> dict[tuple[str, int], str]:
    """(variant, example_id) -> the prompt text."""
    return {(r["variant"], r["example_id"]): r["prompt"] for r in prompts.iter_rows(named=True)}


def _probe(row: Mapping[str, Any], prompt: str, tokenizer, add_bos: bool) -> Event | None:
    """The probe of one event-sample row (``probes``), None when its position falls outside."""
    ids = probe_ids(tokenizer, prompt, row["completion"], row.get("completion_token_ids"), add_bos)
    if not 0 <= row["pred_pos"] < len(ids):
        return None
    key = f"{row['variant']}/{row['example_id']}/{row['sample_id']}"  # stats.problem_of reads it
    return Event(key, tuple(ids), int(row["pred_pos"]), int(row["target"]))


def kind_probes(
    sample: pl.DataFrame, kind: str, prompts: pl.DataFrame, tokenizer, add_bos: bool
) -> list[Event]:
    """``probes`` of the ``bt`` or ``control`` rows of an event sample."""
    return probes(sample.filter(pl.col("kind") == kind), prompts, tokenizer, add_bos)


def logit_lens_table(model: torch.nn.Module, bt: Sequence[Event], control: Sequence[Event]) -> pl.DataFrame:
    """Per layer: the onset token's logit and log-prob read from the residual stream after that layer
    (final norm + unembedding), BT events vs position-matched controls: mean, std (the original's
    columns first) and the problem-clustered 95% t-interval of the mean logit
    (``mean_target_logit_<kind>_lo/_hi``; the problem of each event from its key)."""
    n_layers = len(decoder_layers(model))
    res = {
        kind: teacher.logit_lens(model, ev) if ev else torch.empty(0, n_layers, 2)
        for kind, ev in (("bt", bt), ("control", control))
    }
    problems = {kind: [problem_of(e.key) for e in ev] for kind, ev in (("bt", bt), ("control", control))}
    rows = []
    for layer in range(n_layers):
        row: dict[str, object] = {"layer": layer}
        for kind, r in res.items():
            lg = clustered_mean_interval(r[:, layer, 0].tolist(), problems[kind])
            lp = clustered_mean_interval(r[:, layer, 1].tolist(), problems[kind])
            row |= {
                f"mean_target_logit_{kind}": lg[0],
                f"std_{kind}": lg[1],
                f"mean_target_logit_{kind}_lo": lg[2],
                f"mean_target_logit_{kind}_hi": lg[3],
                f"mean_target_logprob_{kind}": lp[0],
                f"std_logprob_{kind}": lp[1],
                f"n_{kind}": r.shape[0],
            }
        rows.append(row)
    df = pl.DataFrame(rows).with_columns(pl.lit("position_matched_own_token").alias("control_matching"))
    first = [
        "layer",
        "mean_target_logit_bt",
        "mean_target_logit_control",
        "std_bt",
        "std_control",
        "n_bt",
        "n_control",
        "control_matching",
    ]
    return df.select(first + [c for c in df.columns if c not in first])


def ablation_scan_table(
    model: torch.nn.Module,
    events: Sequence[Event],
    components: Sequence[str],
    layers: Sequence[int],
    scale: float,
) -> pl.DataFrame:
    """For every (layer, component): the change in the onset token's logit and log-prob when that
    component's output is multiplied by ``scale`` at the prediction position only (teacher-forced, one
    shared prefix per event), mean over events with std and problem-clustered 95% t-interval. Sorted by
    the mean logit change, most negative first (``delta_wait_logit_mean/_std`` are the original's
    columns)."""
    n_layers = len(decoder_layers(model))
    table, variants = teacher.single_component_table(n_layers, components, layers, scale)
    stats = teacher.onset_deltas(events, len(variants), lambda ev: teacher.score_at_onset(model, ev, table))
    rows = [
        {
            "layer": layer,
            "component": comp,
            "delta_wait_logit_mean": st["delta_logit_mean"],
            "delta_wait_logit_std": st["delta_logit_std"],
            **{k: v for k, v in st.items() if k != "delta_logit_std"},
            "scale": scale,
        }
        for (comp, layer), st in zip(variants, stats, strict=True)
    ]
    return pl.DataFrame(rows).sort("delta_wait_logit_mean", "layer", "component", nulls_last=True)


def continuation_table(
    model: torch.nn.Module,
    tokenizer,
    events: Sequence[Event],
    components: Sequence[tuple[str, int]],
    scales: Sequence[float],
    top_tokens: int,
    synonyms: Sequence[str],
    subset: str,
) -> pl.DataFrame:
    """One row per (event, scale): P(onset token), its logit and log-prob at the onset prediction
    position, clean (scale 1.0) and with ``components`` scaled at that position only, plus the top
    tokens and whether a synonym trigger replaces the onset (the original measured nothing: B13)."""
    n_layers = len(decoder_layers(model))
    table = torch.ones(1 + len(scales), n_layers, len(COMPONENTS))
    for r, s in enumerate(scales, start=1):
        for comp, layer in components:
            table[r, layer, COMPONENTS.index(comp)] = s
    rows = teacher.continuation_rows(
        model, tokenizer, events, table, [1.0, *scales], top_tokens, synonyms, subset
    )
    return pl.DataFrame(rows, schema=teacher.CONTINUATION_SCHEMA) if rows else teacher.empty_continuation()


def resample_events(
    rows: pl.DataFrame, prompts: pl.DataFrame, golds: dict[int, str], tokenizer, add_bos: bool
) -> list[ResampleEvent]:
    """``probes`` of BT event-sample rows as ``onset_resample.ResampleEvent``s: the same ids and
    prediction position, the prompt's length (the completion starts there) and the problem's gold."""
    text = prompt_text(prompts)
    out = []
    for r in rows.iter_rows(named=True):
        prompt = text[(r["variant"], r["example_id"])]
        ev = _probe(r, prompt, tokenizer, add_bos)
        if ev is None:  # out of range
            continue
        stored = r.get("completion_token_ids")  # the probe is prompt ids + these when stored
        n_prompt = (
            len(ev.ids) - len(stored)
            if stored is not None
            else len(encode_prompt(tokenizer, prompt, add_bos))
        )
        gold = golds.get(r["example_id"])
        out.append(ResampleEvent(ev.key, int(r["example_id"]), ev.ids, ev.pred_pos, n_prompt, gold))
    return out
