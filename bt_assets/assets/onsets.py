"""Onset stage (Phase 2): what the continuation subset does at the backtracking onset itself, on a
seeded sample of BT events (``analysis.event_seed``; never the first N, B19).

* ``continuation_ablation``: teacher-forced, one position (the one that predicts the onset), the subset
  scaled there only; P(onset token family) clean vs ablated, paired per event.
* ``onset_resamples``: sampled, from the prefix that ends just before the onset, clean and with the
  subset scaled for the first k decode steps only; P(BT within m tokens), the phrase that replaces the
  onset, accuracy of finished continuations; the clean rate is the onset's stability.
"""

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile
from bt_assets.lib import onset_analysis as onset
from bt_assets.lib import sweep_stats
from bt_assets.lib.detect import detect
from bt_assets.lib.events import golds_of
from bt_assets.lib.grading import grade
from bt_assets.lib.onset_resample import ResampleSpec, event_stability, resample_summary, resample_table
from bt_assets.lib.selection import sample_events
from bt_assets.lib.sweeps import check_layers, subset_components


def build(profile: Profile) -> list:
    p2, add_bos, seed = profile.phase2, profile.model.add_bos, profile.analysis.event_seed
    subsets = {s.name: s for s in p2.subsets}

    def components(model: w.HookedModel, selected: dict, subset: str, key: str) -> list[tuple[str, int]]:
        comps = subset_components(subsets[subset], selected)
        check_layers(comps, w.n_layers(profile, model), f"{key}.subset {subset}")
        return comps

    def sampled_bt(event_sample: pl.DataFrame, n: int) -> pl.DataFrame:
        return sample_events(event_sample.filter(pl.col("kind") == "bt"), n, seed)

    @dg.asset(**w.gpu_asset(profile, "phase2"))
    def onset_resamples(
        context: dg.AssetExecutionContext,
        model: w.HookedModel,
        event_sample: pl.DataFrame,
        prompts: pl.DataFrame,
        problems: pl.DataFrame,
        selected_layers: dict,
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Per sampled BT event, ``samples`` continuations from the prefix before the onset, clean and with
        the subset scaled for the first ``first_k_steps`` decode steps (paired by sampling keys): BT within
        ``window_tokens`` tokens, the opening phrase, and correctness of those that finish."""
        cfg = p2.onset_resamples
        if cfg is None:
            return w.materialized(profile, pl.DataFrame(), note="phase2.onset_resamples not configured")
        comps = components(model, selected_layers, cfg.subset, "phase2.onset_resamples")
        rows = sampled_bt(event_sample, cfg.max_events)
        events = onset.resample_events(rows, prompts, golds_of(problems), model.tokenizer, add_bos)
        g, det = profile.generation, w.detector(profile)
        spec = ResampleSpec(
            cfg.samples, tuple(comps), cfg.scale, cfg.first_k_steps, cfg.window_tokens, cfg.max_new_tokens,
            g.temperature, g.top_p, g.top_k, profile.run.seed,
        )  # fmt: skip

        def found(text: str) -> tuple[bool, str]:
            hit = detect(text, det.strict, det.relaxed, profile.detection.mode)
            return hit.has_strict, hit.phrase

        def correct(text: str, gold: str | None) -> bool | None:
            return grade(text, gold, profile.grading.mode, det.answer_regex).correct

        def decode(ids) -> str:
            return model.tokenizer.decode(list(ids), skip_special_tokens=True)

        df = resample_table(
            model.model, events, spec, model.eos_ids(), decode, found, correct, context.log.info
        )
        summary = resample_summary(df, profile.run.seed)
        meta = {"n_events": len(events), "event_seed": seed, "subset": cfg.subset, "components": str(comps)}
        return w.materialized(profile, df, summary=dg.MetadataValue.json(summary), **meta)

    @dg.asset(**w.gpu_asset(profile, "phase2"))
    def continuation_ablation(
        model: w.HookedModel,
        event_sample: pl.DataFrame,
        prompts: pl.DataFrame,
        selected_layers: dict,
        onset_resamples: pl.DataFrame,
    ) -> dg.MaterializeResult[pl.DataFrame]:
        """Teacher-forced at the onset prediction position of a seeded sample of ``max_events`` BT events:
        P(onset token family) and the onset logit clean and with the subset scaled at that position only,
        per scale, the paired clean-minus-ablated drop per event, the top tokens and whether a synonym
        replaces the onset (the original measured nothing: B13). With ``min_onset_stability``, only
        events whose clean resamples backtrack again at least that often."""
        cfg = p2.continuation
        if cfg is None:
            return w.materialized(profile, pl.DataFrame(), note="phase2.continuation not configured")
        comps = components(model, selected_layers, cfg.subset, "phase2.continuation")
        events = onset.probes(sampled_bt(event_sample, cfg.max_events), prompts, model.tokenizer, add_bos)
        if cfg.min_onset_stability is not None:
            stable = event_stability(onset_resamples).filter(pl.col("stability") >= cfg.min_onset_stability)
            events = [e for e in events if e.key in set(stable["event"])]
        df = onset.continuation_table(
            model.model, model.tokenizer, events, comps, cfg.scales, cfg.top_tokens, cfg.synonyms, cfg.subset
        )
        summary = w.table_md(sweep_stats.continuation_summary(df))
        meta = {"n_events": len(events), "event_seed": seed, "subset": cfg.subset, "components": str(comps)}
        meta["min_onset_stability"] = str(cfg.min_onset_stability)
        return w.materialized(profile, df, summary=summary, **meta)

    return [onset_resamples, continuation_ablation]
