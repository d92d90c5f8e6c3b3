"""The Kubernetes profile without a cluster: ``deploy/k8s/values.yaml`` is rendered into the instance
config the official Helm chart would generate (a Python mirror of the chart's ``configmap-instance``,
``_run-launcher``, ``_postgresql`` and ``_concurrency`` templates and the user deployment's container
context), and every piece is validated against dagster / dagster-k8s's OWN config schemas. Then a run
pod is built with dagster-k8s's real job builder from the launcher, the code location's container
context and the ``dagster-k8s/config`` tag of ``deploy/k8s/profile.yaml`` (profile key ``k8s.gpu``),
and its resources, volumes and environment are checked.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, validate_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.instance.config import dagster_instance_config
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin

from bt_assets.config import K8S_CONFIG_TAG, ConfigError, load_profile

dagster_k8s = pytest.importorskip(
    "dagster_k8s", reason="dagster-k8s is not installed (pip install -e '.[dev]')"
)
from dagster_k8s import K8sRunLauncher  # noqa: E402
from dagster_k8s.container_context import K8sContainerContext  # noqa: E402
from dagster_k8s.job import (  # noqa: E402
    USER_DEFINED_K8S_CONFIG_KEY,
    USER_DEFINED_K8S_JOB_CONFIG_SCHEMA,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "k8s" / "values.yaml"
K8S_PROFILE = ROOT / "deploy" / "k8s" / "profile.yaml"
RELEASE = NAMESPACE = "bt"
FULLNAME = f"{RELEASE}-dagster"
IMAGE = "registry.example.com/bt:test"


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def names(refs: list[dict]) -> list[str]:
    return [r["name"] for r in refs if "name" in r]


def snake_keys(src: dict, keys: list[str]) -> dict:
    """The chart's camelCase ``keys`` that are set in ``src``, under their snake_case config names."""
    return {re.sub(r"(?=[A-Z])", "_", k).lower(): src[k] for k in keys if src.get(k)}


def render_run_launcher(values: dict) -> dict:
    """``run_launcher`` as the chart's ``dagsterYaml.runLauncher.k8s`` renders it."""
    c = values["runLauncher"]["config"]["k8sRunLauncher"]
    cfg = {
        "load_incluster_config": c["loadInclusterConfig"],
        "job_namespace": c.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": c["imagePullPolicy"],
        "service_account_name": FULLNAME,
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if c.get("kubeconfigFile"):
        cfg["kubeconfig_file"] = c["kubeconfigFile"]
    if c.get("image"):
        cfg["job_image"] = f"{c['image']['repository']}:{c['image']['tag']}"
    simple = ["envVars", "volumeMounts", "volumes", "labels", "resources", "schedulerName", "securityContext"]
    cfg.update(snake_keys(c, simple))
    if c.get("envConfigMaps"):
        cfg["env_config_maps"] = names(c["envConfigMaps"])
    if c.get("envSecrets"):
        cfg["env_secrets"] = names(c["envSecrets"])
    if c.get("failPodOnRunFailure"):
        cfg["fail_pod_on_run_failure"] = True
    run_cfg = c.get("runK8sConfig") or {}
    parts = ["containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"]
    unknown = set(run_cfg) - set(parts)
    assert not unknown, f"runK8sConfig keys the chart drops: {unknown}"
    if run_cfg:
        cfg["run_k8s_config"] = snake_keys(run_cfg, parts)
    return cfg


def render_postgres(values: dict) -> dict:
    """``dagsterYaml.postgresql.config``: the password is always ``{env: DAGSTER_PG_PASSWORD}``."""
    pg = values["postgresql"]
    host = pg["postgresqlHost"] if not pg["enabled"] else f"{FULLNAME}-postgresql"
    cfg = {
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": host,
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg.get("postgresqlParams") or {},
        }
    }
    if pg.get("postgresqlScheme"):
        cfg["postgres_db"]["scheme"] = pg["postgresqlScheme"]
    return cfg


def render_concurrency(values: dict) -> dict:
    """``dagsterYaml.concurrency`` (pools only; rendered when ``concurrency.enabled``)."""
    conc = values.get("concurrency") or {}
    if not conc.get("enabled"):
        return {}
    pools = conc.get("pools") or {}
    keys = {"defaultLimit": "default_limit", "granularity": "granularity"}
    return {"pools": {snake: pools[camel] for camel, snake in keys.items() if pools.get(camel) is not None}}


def render_instance(values: dict) -> dict:
    """The chart's ``configmap-instance.yaml`` for the sections these values set."""
    storage = {"config": render_postgres(values)}
    qrc = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    instance = {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", **storage},
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            **storage,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            **storage,
        },
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": render_run_launcher(values),
        },
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": qrc["dequeueIntervalSeconds"]},
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    if conc := render_concurrency(values):
        instance["concurrency"] = conc
    return instance


def code_location_context(values: dict) -> dict:
    """``dagsterUserDeployments.k8sContainerContext``: what the code location adds to its run pods."""
    (dep,) = values["dagster-user-deployments"]["deployments"]
    assert dep["includeConfigInLaunchedRuns"]["enabled"]
    k8s = {
        "image_pull_policy": dep["image"]["pullPolicy"],
        "env_config_maps": [f"{RELEASE}-dagster-user-deployments-{dep['name']}-user-env"]
        + names(dep.get("envConfigMaps") or []),
        "namespace": NAMESPACE,
        "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments",
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    k8s.update(snake_keys(dep, ["volumeMounts", "volumes", "resources"]))
    if dep.get("envSecrets"):
        k8s["env_secrets"] = names(dep["envSecrets"])
    return {"k8s": k8s}


def ok(result) -> None:
    assert result.success, "\n".join(e.message for e in result.errors)


# -- the instance the chart renders ------------------------------------------------------------------


def test_run_launcher_config_valid(values):
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    ok(process_config(K8sRunLauncher.config_type(), render_run_launcher(values)))


def test_instance_yaml_valid_with_postgres_and_gpu_pool(values, tmp_path):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    instance = render_instance(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    dagster_instance_config(str(tmp_path))  # the instance schema, concurrency conflicts included
    for section, cls in (
        ("run_storage", PostgresRunStorage),
        ("event_log_storage", PostgresEventLogStorage),
        ("schedule_storage", PostgresScheduleStorage),
        ("run_coordinator", QueuedRunCoordinator),
        ("run_launcher", K8sRunLauncher),
    ):
        ok(validate_config(cls.config_type(), instance[section]["config"]))
    # the pool settings are the repository's: the gpu pool runs one run at a time
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert instance["concurrency"] == local["concurrency"]
    assert instance["concurrency"]["pools"] == {"default_limit": 1, "granularity": "run"}
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    # concurrency.runs next to the queued coordinator's defaults breaks the daemon (dagster#33225)
    assert not values["concurrency"].get("runs")
    # psycopg2 is the driver dagster-postgres installs; SQLAlchemy 2.1 defaults to psycopg 3
    assert instance["run_storage"]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_no_credentials_in_values(values):
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert not values["postgresql"].get("postgresqlPassword")
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    assert "ingress" not in values or not values["ingress"].get("enabled")


# -- the GPU tag and the run pods ---------------------------------------------------------------------


def gpu_profile():
    profile = load_profile(str(K8S_PROFILE))
    assert profile.k8s.gpu is not None
    return profile


def test_profile_gpu_tag_matches_dagster_k8s_schema():
    profile = gpu_profile()
    op_tags = profile.k8s_gpu_op_tags()
    assert set(op_tags) == {USER_DEFINED_K8S_CONFIG_KEY}  # the one tag dagster-k8s reads
    ok(validate_config(USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, op_tags[USER_DEFINED_K8S_CONFIG_KEY]))
    parsed = get_user_defined_k8s_config(profile.k8s_gpu_run_tags())  # what the launcher reads
    assert parsed.container_config["resources"]["limits"]["nvidia.com/gpu"] == 1
    # where runs execute is not part of the experiment: the hash equals the profile without k8s
    assert profile.config_hash() == profile.model_copy(update={"k8s": type(profile.k8s)()}).config_hash()
    assert load_profile("demo").k8s_gpu_op_tags() == {} and load_profile("demo").k8s_gpu_run_tags() == {}


def test_profile_k8s_key_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {K8S_PROFILE}\nk8s: {{gpu: {{container_confg: {{}}}}}}\n")
    with pytest.raises(ConfigError, match=r"k8s\.gpu\.container_confg: unknown key"):
        load_profile(str(bad))


@pytest.mark.slow  # runs a job in a Dagster instance
def test_gpu_tag_on_assets_and_jobs():
    """As ``op_tags`` (step pods, k8s_job_executor) and as job/run tags (the run pod): both parse."""
    profile = gpu_profile()

    @dg.asset(pool="gpu", op_tags=profile.k8s_gpu_op_tags())
    def gpu_asset() -> None:
        return None

    step = get_user_defined_k8s_config(gpu_asset.op.tags)
    assert step.container_config["resources"]["limits"]["nvidia.com/gpu"] == 1
    job = dg.define_asset_job("gpu_job", selection=[gpu_asset], tags=profile.k8s_gpu_run_tags())
    defs = dg.Definitions(assets=[gpu_asset], jobs=[job])
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("gpu_job").execute_in_process(instance=instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
    parsed = get_user_defined_k8s_config(run.tags)
    assert parsed.container_config["resources"]["limits"]["nvidia.com/gpu"] == 1


@pytest.fixture(scope="module")
def launcher(values, tmp_path_factory):
    """The real K8sRunLauncher from the rendered config; a dummy kubeconfig stands in for the
    in-cluster config (nothing connects to it)."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "none", "user": {}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    cfg = {**render_run_launcher(values), "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    result = process_config(K8sRunLauncher.config_type(), cfg)
    ok(result)
    return K8sRunLauncher.from_config_value(None, result.value)


def run_pod(values, launcher, tags: dict[str, str]):
    origin = JobPythonOrigin(
        "sweep_job",
        RepositoryPythonOrigin(
            executable_path=sys.executable,
            code_pointer=ModuleCodePointer("bt_assets.definitions", "defs", working_directory=None),
            container_image=IMAGE,
            container_context=code_location_context(values),
        ),
    )
    run = dg.DagsterRun(job_name="sweep_job", run_id="0" * 36, tags=tags, job_code_origin=origin)
    ctx = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = construct_dagster_k8s_job(
        job_config=ctx.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-test",
        pod_name="dagster-run-test",
        component="run_worker",
        user_defined_k8s_config=ctx.run_k8s_config,
    )
    return job


def test_gpu_run_pod(values, launcher):
    profile = gpu_profile()
    job = run_pod(values, launcher, profile.k8s_gpu_run_tags())
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == IMAGE
    limits, requests = container.resources.limits, container.resources.requests
    gpu = profile.k8s.gpu.container_config["resources"]
    assert str(limits["nvidia.com/gpu"]) == "1"  # Kubernetes quantities are strings
    assert limits["memory"] == gpu["limits"]["memory"]  # the tag wins over the launcher default
    assert requests["cpu"] == gpu["requests"]["cpu"]
    assert pod.node_selector == profile.k8s.gpu.pod_spec_config["node_selector"]
    assert [t.key for t in pod.tolerations] == ["nvidia.com/gpu"]
    # one Job per run, not retried by Kubernetes, cleaned up after a day
    assert job.spec.backoff_limit == 0 and job.spec.ttl_seconds_after_finished == 86400


def test_cpu_run_pod_shared_volume_and_profile(values, launcher):
    job = run_pod(values, launcher, {})
    pod = job.spec.template.spec
    (container,) = pod.containers
    launcher_res = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]
    assert "nvidia.com/gpu" not in (container.resources.limits or {})
    assert container.resources.limits["memory"] == launcher_res["resources"]["limits"]["memory"]
    assert container.resources.requests == launcher_res["resources"]["requests"]
    # the shared volume holding paths.storage/figures/reports, from the code location
    mounts = {m.name: m.mount_path for m in container.volume_mounts}
    assert mounts["bt-data"] == "/data"
    claims = {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim}
    assert claims == {"bt-data": "bt-data"}
    profile = gpu_profile()
    for kind in ("storage", "figures", "reports"):
        assert str(profile.path(kind)).startswith("/data/")
    # BT_PROFILE reaches the run pod through the location's env ConfigMap
    (dep,) = values["dagster-user-deployments"]["deployments"]
    assert dep["env"]["BT_PROFILE"] == "/opt/bt/deploy/k8s/profile.yaml"
    refs = [e.config_map_ref.name for e in container.env_from if e.config_map_ref]
    assert code_location_context(values)["k8s"]["env_config_maps"][0] in refs
    # the Postgres password reaches the pod from the Secret, never from a literal
    pw = next(e for e in container.env if e.name == "DAGSTER_PG_PASSWORD")
    assert pw.value is None and pw.value_from.secret_key_ref.name == values["global"]["postgresqlSecretName"]


def test_dockerfile_serves_the_code_location(values):
    text = (ROOT / "deploy" / "k8s" / "Dockerfile").read_text()
    (dep,) = values["dagster-user-deployments"]["deployments"]
    assert dep["dagsterApiGrpcArgs"] == ["-m", "bt_assets.definitions"]
    assert "requirements.lock" in text and "USER" in text
    assert json.dumps(dep["port"]) in text


def test_platform_assets_and_jobs_carry_the_gpu_tag():
    """With ``k8s.gpu`` set, every GPU asset's op tags and every job's run tags hold the pod config;
    CPU assets carry none (so only GPU steps ask for a GPU under the step executor)."""
    from bt_assets.definitions import build_definitions

    profile = load_profile(str(ROOT / "deploy" / "k8s" / "profile.yaml"))
    defs = build_definitions(profile)
    graph = defs.resolve_asset_graph()
    gpu = {k for k in graph.materializable_asset_keys if graph.get(k).pools == {"gpu"}}
    assert {"phase1_generations", "sweep_generations", "ablation_scan"} <= {k.path[0] for k in gpu}
    for key in graph.materializable_asset_keys:
        tags = defs.get_assets_def(key).op.tags
        assert (K8S_CONFIG_TAG in tags) == (key in gpu), key
    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__"):
            assert json.loads(job.tags[K8S_CONFIG_TAG]) == profile.k8s.gpu.model_dump(
                mode="json", exclude_none=True
            ), job.name
