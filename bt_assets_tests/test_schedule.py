"""Declarative automation of the sweep cells: on a tick of ``phase2.schedule_cron`` it requests the cells
that are missing or whose code version changed, and how many runs (model loads) that costs.

A request of several cells goes out as one backfill; the single-run backfill policy makes it one run
per contiguous range of partition keys (Dagster's ``get_partition_key_ranges``, what its backfill and
automation code split requests by), so ``runs`` below counts the model loads a request costs."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from bt_assets.config import Profile, deep_merge, load_profile
from bt_assets.definitions import build_definitions
from bt_assets.lib.sweeps import sweep_cells
from bt_assets.partitions import sweep_cell_list, sweep_partitions
from bt_assets_tests.conftest import tmp_instance

pytestmark = pytest.mark.slow  # a Dagster instance

KEY = dg.AssetKey("sweep_generations")
DEPS = ("sweep_prompts", "selected_layers")
DAY = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
BEFORE, AFTER = DAY.replace(hour=1), DAY.replace(hour=2, minute=1)  # around the 02:00 tick


def profile_with(base: Profile, over: dict) -> Profile:
    return Profile.model_validate(deep_merge(base.model_dump(mode="json"), over))


def runs(profile: Profile, keys: set[str]) -> int:
    """Runs (model loads) of a single-run backfill of ``keys``: one per contiguous range of keys."""
    pdef = sweep_partitions(profile)
    return len(pdef.subset_with_partition_keys(keys).get_partition_key_ranges(pdef)) if keys else 0


class Daemon:
    """The automation sensor's evaluations, one after another with their cursor."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance, self.cursor = instance, None

    def tick(self, defs: dg.Definitions, when: dt.datetime) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs,
            self.instance,
            asset_selection=dg.AssetSelection.assets(KEY),
            evaluation_time=when,
            cursor=self.cursor,
        )
        self.cursor = result.cursor
        return set(result.get_requested_partitions(KEY))


def materialize(instance: dg.DagsterInstance, cells=(), deps: bool = False) -> None:
    for name in DEPS if deps else ():
        instance.report_runless_asset_event(dg.AssetMaterialization(name))
    for cell in cells:
        instance.report_runless_asset_event(dg.AssetMaterialization(KEY, partition=cell))


def test_sweep_cells_are_automated_not_scheduled():
    profile = load_profile("demo")
    defs = build_definitions(profile)
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == KEY)
    assert spec.automation_condition is not None
    assert not list(defs.schedules or [])
    sensor = defs.resolve_sensor_def("sweep_automation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # phase2.schedule_enabled: false
    enabled = build_definitions(profile_with(profile, {"phase2": {"schedule_enabled": True}}))
    assert (
        enabled.resolve_sensor_def("sweep_automation_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    )


def test_missing_cells_requested_on_the_cron_tick_only(tmp_path):
    profile = load_profile("demo")
    defs = build_definitions(profile)
    keys = sweep_partitions(profile).get_partition_keys()
    with tmp_instance(tmp_path) as instance:
        daemon = Daemon(instance)
        assert daemon.tick(defs, BEFORE) == set()
        assert daemon.tick(defs, AFTER) == set(), "inputs missing: nothing to request yet"
        materialize(instance, deps=True)
        assert daemon.tick(defs, AFTER + dt.timedelta(hours=1)) == set(), "no cron tick since"
        assert daemon.tick(defs, AFTER + dt.timedelta(days=1)) == set(keys)
        assert runs(profile, set(keys)) == 1

        # all cells done but every second one: each is its own range, its own run and model load
        scattered = set(keys[1::2])
        materialize(instance, cells=set(keys) - scattered)
        assert daemon.tick(defs, AFTER + dt.timedelta(days=2)) == scattered
        assert runs(profile, scattered) == len(scattered) == len(keys) // 2 >= 2

        materialize(instance, cells=scattered)
        assert daemon.tick(defs, AFTER + dt.timedelta(days=3)) == set()


def test_code_version_change_requests_every_cell_once(tmp_path):
    profile = load_profile("demo")
    keys = sweep_partitions(profile).get_partition_keys()
    hotter = build_definitions(profile_with(profile, {"generation": {"temperature": 1.2}}))
    with tmp_instance(tmp_path) as instance:
        daemon = Daemon(instance)
        materialize(instance, cells=keys, deps=True)
        assert daemon.tick(build_definitions(profile), BEFORE) == set()
        assert daemon.tick(build_definitions(profile), AFTER) == set()
        # the change is seen between ticks and remembered until the next one
        assert daemon.tick(hotter, BEFORE + dt.timedelta(days=1)) == set()
        assert daemon.tick(hotter, AFTER + dt.timedelta(days=1)) == set(keys)
        assert runs(profile, set(keys)) == 1
        materialize(instance, cells=keys)
        assert daemon.tick(hotter, AFTER + dt.timedelta(days=2)) == set()
        # an operational key (batch size) is no change
        bigger = build_definitions(
            profile_with(profile, {"generation": {"temperature": 1.2, "batch_size": 8}})
        )
        assert daemon.tick(bigger, AFTER + dt.timedelta(days=3)) == set()


def test_cells_that_go_stale_together_are_one_range():
    """The paper's sweep: editing one subset (here the scale-swept ``mlp_late_cluster``) or new selected
    layers makes a block of cells stale; ordered by subset, each block is one run. In the cells' own
    order (baseline, subset cells, then the scale sweep) the edited subset's cells were two ranges."""
    profile = load_profile("paper")
    by_subset: dict[str, set[str]] = {}
    for cell in sweep_cell_list(profile):
        by_subset.setdefault(cell.subset, set()).add(cell.key)
    derived = {s.name for s in profile.phase2.subsets if s.from_selected}
    from_selected = set().union(*(by_subset[n] for n in derived))
    assert runs(profile, by_subset["mlp_late_cluster"]) == 1
    assert runs(profile, from_selected) == 1

    p2 = profile.phase2
    scales = p2.scale_sweep.scales
    cell_order = [
        c.key for c in sweep_cells([s.name for s in p2.subsets], 0.0, p2.scale_sweep.subset, scales)
    ]
    pdef = dg.StaticPartitionsDefinition(cell_order)
    old = pdef.subset_with_partition_keys(by_subset["mlp_late_cluster"]).get_partition_key_ranges(pdef)
    assert len(old) == 2
