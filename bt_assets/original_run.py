"""The second code location: the original Phase-1 run of DeepSeek-R1-Distill-Qwen-1.5B (200 GSM8K
problems, 6,000 graded events, shipped in ``bt_assets_tests/fixtures``) re-analysed from its events.

Its assets carry the key prefix ``original_run/`` so they sit beside the live demo's in one UI, each
with its own lineage; its outputs go under ``storage/original_run``, ``figures/original_run`` and
``reports/original_run_report.md`` (profile ``BT_ORIGINAL_PROFILE``, default ``original_run``).
"""

from __future__ import annotations

import os

from bt_assets.config import load_profile
from bt_assets.definitions import build_definitions

KEY_PREFIX = "original_run"

profile = load_profile(os.environ.get("BT_ORIGINAL_PROFILE") or "original_run")
defs = build_definitions(profile, key_prefix=KEY_PREFIX)
