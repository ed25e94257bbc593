"""cloudbuild.yaml and the Cloud Run definitions in infra/ it deploys.

Cloud Build rejects a build that uses an undefined user substitution only at submit time, and a
typo in a service YAML only shows at deploy time; both are cheap to catch here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from backend.config import Settings
from backend.core.db import create_engine
from backend.ops.router import READY_CHECK_TIMEOUT_SECONDS
from backend.tasks.rows import transition_pool

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# Cloud Build's own substitutions (https://cloud.google.com/build/docs/configuring-builds/
# substitute-variable-values), available without a `substitutions` entry.
BUILT_INS = {
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "LOCATION",
    "BUILD_ID",
    "COMMIT_SHA",
    "SHORT_SHA",
    "REVISION_ID",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "TRIGGER_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
}
# $$ is a literal dollar for the step; everything else starting with $ is a substitution.
SUBSTITUTION = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
# registry/path[:tag][@digest], as Docker accepts it (lowercase repository path).
IMAGE_REF = re.compile(
    r"^(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
TOKEN = re.compile(r"__([A-Z][A-Z0-9_]*)__")


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    return config


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def _used(text: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in SUBSTITUTION.finditer(text) if m.group(0) != "$$"}


def _expand(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        return values.get(name, f"<{name}>")

    return SUBSTITUTION.sub(one, text)


def _values(build: dict[str, Any]) -> dict[str, str]:
    defined = {k: str(v) for k, v in build["substitutions"].items()}
    return defined | {"PROJECT_ID": "my-project", "BUILD_ID": "0b1d", "SHORT_SHA": "abc1234"}


def test_every_substitution_used_is_defined_or_built_in(build: dict[str, Any]) -> None:
    defined = set(build["substitutions"])
    assert all(name.startswith("_") for name in defined), "user substitutions start with _"
    used = set().union(*(_used(s) for s in _strings(dict(build.items()))))
    unknown = set(used - defined - BUILT_INS)
    assert not unknown, f"undefined substitutions: {sorted(unknown)}"
    # Cloud Build fails a build whose substitutions are defined but never used.
    assert not defined - used, f"unused substitutions: {sorted(defined - used)}"


def test_substitutions_cover_project_region_repository_and_names(build: dict[str, Any]) -> None:
    assert {"_REGION", "_REPOSITORY", "_API_SERVICE", "_WORKER_POOL", "_MIGRATE_JOB"} <= set(
        build["substitutions"]
    )


def test_every_step_has_an_image_and_string_arguments(build: dict[str, Any]) -> None:
    ids = [step.get("id") for step in build["steps"]]
    assert len(ids) == len(set(ids))
    assert all(ids)
    for step in build["steps"]:
        assert isinstance(step["name"], str)
        assert IMAGE_REF.match(step["name"]), step["name"]
        args = step["args"]
        assert isinstance(args, list)
        assert args
        assert all(isinstance(arg, str) and arg for arg in args), step["id"]
        assert all(isinstance(item, str) and "=" in item for item in step.get("env", []))
        for dependency in step.get("waitFor", []):
            assert dependency == "-" or dependency in ids[: ids.index(step["id"])]


def test_the_image_pushed_is_the_one_built_and_deployed(build: dict[str, Any]) -> None:
    values = _values(build)
    steps = {step["id"]: step for step in build["steps"]}
    built = _expand(steps["build"]["args"][steps["build"]["args"].index("--tag") + 1], values)
    assert IMAGE_REF.match(built), built
    assert built.startswith(f"{values['_REGION']}-docker.pkg.dev/my-project/")
    assert _expand(steps["push"]["args"][-1], values) == built
    assert [_expand(image, values) for image in build["images"]] == [built]
    assert _expand_flag(steps["migrate-job"], "--image", values) == built
    rendered = dict(_expand(item, values).split("=", 1) for item in steps["render"]["env"])
    assert rendered["TOKEN_IMAGE"] == built


def test_builds_reuse_the_last_image_as_layer_cache(build: dict[str, Any]) -> None:
    values = _values(build)
    steps = {step["id"]: step for step in build["steps"]}
    args = steps["build"]["args"]
    built = _expand(args[args.index("--tag") + 1], values)
    cache = _expand(args[args.index("--cache-from") + 1], values)
    # The cache source is the same repository's moving tag, which this build tags and pushes.
    assert cache.rsplit(":", 1)[0] == built.rsplit(":", 1)[0]
    assert cache != built
    tags = [_expand(args[i + 1], values) for i, arg in enumerate(args) if arg == "--tag"]
    assert cache in tags
    assert any(
        _expand(step["args"][-1], values) == cache
        for step in build["steps"]
        if step["args"][0] == "push"
    )
    # BuildKit only reuses layers of an image that carries inline cache metadata.
    assert "DOCKER_BUILDKIT=1" in steps["build"]["env"]
    assert args[args.index("--build-arg") + 1] == "BUILDKIT_INLINE_CACHE=1"
    # Deploys never use the moving tag.
    assert _expand_flag(steps["migrate-job"], "--image", values) == built
    assert [_expand(image, values) for image in build["images"]] == [built]


def _expand_flag(step: dict[str, Any], flag: str, values: dict[str, str]) -> str:
    found = [arg.split("=", 1)[1] for arg in step["args"] if arg.startswith(flag + "=")]
    assert len(found) == 1, (step["id"], flag)
    return _expand(found[0], values)


def test_migrations_run_as_a_job_before_deploys(build: dict[str, Any]) -> None:
    steps = {step["id"]: step for step in build["steps"]}
    order = list(steps)
    job = steps["migrate-job"]["args"]
    assert job[:3] == ["run", "jobs", "deploy"]
    assert "--command=atelier" in job
    assert "--args=migrate" in job
    assert steps["migrate"]["args"][:3] == ["run", "jobs", "execute"]
    assert "--wait" in steps["migrate"]["args"]
    assert order.index("migrate") < order.index("deploy-api")
    assert order.index("migrate") < order.index("deploy-worker")
    assert steps["deploy-api"]["args"][:3] == ["run", "services", "replace"]
    assert steps["deploy-worker"]["args"][:3] == ["run", "worker-pools", "replace"]


# ---------------------------------------------------------------------------
# infra/


def _render(name: str, build: dict[str, Any]) -> dict[str, Any]:
    values = _values(build)
    step = next(step for step in build["steps"] if step["id"] == "render")
    tokens = {
        key.removeprefix("TOKEN_"): _expand(value, values)
        for key, value in (item.split("=", 1) for item in step["env"])
    }
    text = (INFRA / name).read_text()
    missing = set(TOKEN.findall(text)) - set(tokens)
    assert not missing, f"{name}: the render step has no value for {sorted(missing)}"
    document: dict[str, Any] = yaml.safe_load(TOKEN.sub(lambda m: tokens[m.group(1)], text))
    return document


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


SECRETS = {
    "ATELIER_SECRET_KEY",
    "DATABASE_URL",
    "GEMINI_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}


def _check_secrets(env: dict[str, dict[str, Any]]) -> None:
    for name in SECRETS:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"].startswith("atelier-"), name
        assert ref["key"] == "latest", name
        assert "value" not in env[name]


def test_api_service(build: dict[str, Any]) -> None:
    service = _render("api-service.yaml", build)
    assert service["apiVersion"] == "serving.knative.dev/v1"
    assert service["kind"] == "Service"
    assert service["metadata"]["name"] == build["substitutions"]["_API_SERVICE"]
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    spec = template["spec"]

    assert spec["timeoutSeconds"] == 3600  # WebSockets live as long as the request timeout
    assert 1 <= spec["containerConcurrency"] <= 1000
    assert annotations["run.googleapis.com/sessionAffinity"] == "true"
    assert (
        0
        <= int(annotations["autoscaling.knative.dev/minScale"])
        <= int(annotations["autoscaling.knative.dev/maxScale"])
    )
    assert annotations["run.googleapis.com/cloudsql-instances"].count(":") == 2
    assert "run.googleapis.com/network-interfaces" in annotations
    assert annotations["run.googleapis.com/vpc-access-egress"] == "private-ranges-only"
    assert spec["serviceAccountName"].endswith(".iam.gserviceaccount.com")

    (container,) = spec["containers"]
    assert container["ports"][0]["containerPort"] == 8080
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    # Startup waits for the dependencies; liveness needs only the process.
    assert startup["httpGet"] == {"path": "/readyz", "port": 8080}
    assert liveness["httpGet"] == {"path": "/healthz", "port": 8080}
    # About two minutes for Direct VPC egress to come up (Cloud Run allows at most 240 s), and
    # each probe's timeout above the app's own 2 s dependency check timeout.
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert 110 <= budget <= 240, budget
    assert READY_CHECK_TIMEOUT_SECONDS < startup["timeoutSeconds"] <= startup["periodSeconds"]
    env = _env(container)
    _check_secrets(env)
    assert env["ATELIER_ENV"]["value"] == "prod"
    assert "PORT" not in env  # Cloud Run sets it; declaring it is an error


def test_worker_pool(build: dict[str, Any]) -> None:
    pool = _render("worker-pool.yaml", build)
    assert pool["kind"] == "WorkerPool"
    assert pool["metadata"]["name"] == build["substitutions"]["_WORKER_POOL"]
    template = pool["spec"]["template"]
    assert "run.googleapis.com/cloudsql-instances" in template["metadata"]["annotations"]
    (container,) = template["spec"]["containers"]
    assert [*container["command"], *container["args"]] == ["atelier", "worker"]
    # No HTTP server in the worker: no port and no HTTP probes to fail.
    assert "ports" not in container
    assert "startupProbe" not in container
    env = _env(container)
    _check_secrets(env)
    assert env["REDIS_URL"]["value"].startswith(("redis://", "rediss://"))


def test_service_account_is_least_privilege() -> None:
    account = yaml.safe_load((INFRA / "service-account.yaml").read_text())
    roles = {entry["role"] for entry in account["roles"]["project"]}
    roles |= {entry["role"] for entry in account["roles"]["bucket"]}
    assert "roles/cloudsql.client" in roles
    assert not {r for r in roles if r.endswith((".admin", "/editor", "/owner"))}
    # Secret access is granted per secret, and every secret the services read is listed.
    assert set(account["roles"]["secrets"]) >= {
        "atelier-secret-key",
        "atelier-database-url",
        "atelier-gemini-api-key",
        "atelier-s3-access-key-id",
        "atelier-s3-secret-access-key",
    }


def test_readme_walks_through_every_secret_and_file() -> None:
    readme = (INFRA / "README.md").read_text()
    for name in ("api-service.yaml", "worker-pool.yaml", "service-account.yaml"):
        assert name in readme
    for secret in ("atelier-secret-key", "atelier-database-url", "atelier-gemini-api-key"):
        assert f"gcloud secrets create {secret}" in readme


# Cloud SQL for PostgreSQL's max_connections at 3.75 GB (the tier in infra/README.md), less
# PostgreSQL's superuser_reserved_connections.
DATABASE_CONNECTIONS = 100 - 3


def _pool(container: dict[str, Any]) -> int:
    env = _env(container)
    settings = Settings(
        env="test",
        secret_key="x" * 40,
        database_url="postgresql+asyncpg://atelier@127.0.0.1:5432/atelier",
        database_pool_size=env["ATELIER_DATABASE_POOL_SIZE"]["value"],
        database_max_overflow=env["ATELIER_DATABASE_MAX_OVERFLOW"]["value"],
    )
    # What the process really opens: the engine built from those settings (it connects lazily).
    engine = create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    pool: Any = engine.pool
    return int(pool.size() + pool._max_overflow)


def test_connection_budget_fits_the_database(build: dict[str, Any]) -> None:
    service = _render("api-service.yaml", build)
    workers = _render("worker-pool.yaml", build)
    api_instances = int(
        service["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"]
    )
    scaling = workers["metadata"]["annotations"]
    worker_instances = int(scaling["run.googleapis.com/manualInstanceCount"])
    (api,) = service["spec"]["template"]["spec"]["containers"]
    (worker,) = workers["spec"]["template"]["spec"]["containers"]
    per_api, per_worker = _pool(api), _pool(worker)
    # A worker also holds its own pool for task transitions, sized by its concurrency.
    worker_env = _env(worker)
    default = Settings.model_fields["worker_concurrency"].default
    concurrency = int(worker_env.get("ATELIER_WORKER_CONCURRENCY", {}).get("value", default))
    transitions = sum(transition_pool(concurrency))
    per_worker += transitions
    total = api_instances * per_api + worker_instances * per_worker + 1  # + the migrate job
    assert total <= DATABASE_CONNECTIONS, total
    readme = (INFRA / "README.md").read_text()
    # The arithmetic in the walk-through is the one the YAML gives.
    assert f"| {api_instances} | 5 + 2 | {api_instances * per_api} |" in readme
    assert (
        f"| {worker_instances} | 5 + 2 + {transitions} | {worker_instances * per_worker} |"
        in readme
    )
    assert f"**{total} ≤ {DATABASE_CONNECTIONS}**" in readme


def test_websocket_concurrency_is_explained(build: dict[str, Any]) -> None:
    service = _render("api-service.yaml", build)
    template = service["spec"]["template"]
    concurrency = template["spec"]["containerConcurrency"]
    instances = int(template["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"])
    # Each open socket is one request for its whole life: well above the old 40 per instance.
    assert 100 <= concurrency <= 1000
    readme = (INFRA / "README.md").read_text()
    assert f"`containerConcurrency` is mostly *sockets per instance*. It is {concurrency}" in readme
    assert f"{instances} instances × {concurrency} = {instances * concurrency:,}" in readme


def test_max_overflow_is_a_setting() -> None:
    settings = Settings(env="test", secret_key="x" * 40, database_max_overflow=0)
    assert settings.database_max_overflow == 0
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings(env="test", secret_key="x" * 40, database_max_overflow=-1)
