"""The Kubernetes manifests under deploy/k8s: schema-valid (offline, strict) and consistent with each
other and with the processes they run (stream names and consumer group come from the code that
builds them). No cluster needed; every check fails, never skips."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from k8s_documents import (
    API_PORT,
    CUSTOM_GROUPS,
    DOCS,
    Doc,
    EXPECTED_FILES,
    K8S,
    K8S_VERSION,
    LONGEST_JOB_S,
    MODEL,
    MODELS_CLAIM,
    NAMESPACE,
    NOT_APPLIED,
    WORKER_PORT,
    api_deployment,
    configmap_data,
    container_of,
    document_id,
    env_sources,
    flag_value,
    labels_match,
    one_document,
    probe_port,
    worker_deployment,
)

from reelserve.redis_names import DEFAULT_NAMESPACE


# --- every file, every document -------------------------------------------------------------------


def test_expected_files_exist_and_parse() -> None:
    present = {p.name for p in K8S.glob("*.yaml")}
    assert EXPECTED_FILES <= present, f"missing: {sorted(EXPECTED_FILES - present)}"
    assert {name for name, _ in DOCS} == present, "a file under deploy/k8s holds no YAML document"


def test_every_document_has_identity_and_namespace() -> None:
    for name, doc in DOCS:
        assert {"apiVersion", "kind"} <= doc.keys(), f"{name}: no apiVersion or kind"
        if doc["kind"] == "Kustomization":
            continue
        assert "metadata" in doc, f"{name}: {doc['kind']} has no metadata"
        if doc["kind"] == "Namespace":
            continue
        assert doc["metadata"].get("name"), f"{name}: {doc['kind']} has no name"
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {doc['kind']} not in {NAMESPACE}"
    assert one_document("Namespace", NAMESPACE)


BUILTIN = [item for item in DOCS if not item[1]["apiVersion"].startswith(CUSTOM_GROUPS)]
# With no manifests at all, parametrize would skip; this placeholder makes the check fail instead.
_NOTHING = ("no manifests found", {"apiVersion": "none", "kind": "none", "metadata": {"name": "none"}})
BUILTIN_PARAMS = BUILTIN or [_NOTHING]


def test_builtin_kinds_cover_the_deployment() -> None:
    kinds = sorted({d["kind"] for _, d in BUILTIN})
    assert kinds == [
        "ConfigMap", "Deployment", "Namespace", "PersistentVolumeClaim", "PodDisruptionBudget", "Secret",
        "Service", "StatefulSet",
    ]


@pytest.mark.parametrize("item", BUILTIN_PARAMS, ids=[document_id(i) for i in BUILTIN_PARAMS])
def test_builtin_kind_is_schema_valid(item: tuple[str, Doc]) -> None:
    """Strict: unknown fields fail too. Offline: kubernetes-validate's bundled schemas."""
    assert item is not _NOTHING, f"no YAML documents under {K8S}"
    name, doc = item
    try:
        validated = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name} {doc['kind']}: {exc.message} at {list(exc.path)}")
    assert validated == "1.30"


def test_only_known_custom_resources() -> None:
    custom = sorted(
        (d["apiVersion"], d["kind"]) for _, d in DOCS if d["apiVersion"].startswith(CUSTOM_GROUPS)
    )
    assert custom == [
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ]


# --- kustomization, config and secrets ------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomizations = [d for name, d in DOCS if d["kind"] == "Kustomization"]
    assert len(kustomizations) == 1
    kustomization = kustomizations[0]
    assert kustomization.get("namespace") == NAMESPACE
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    expected = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} - NOT_APPLIED
    assert set(resources) == expected
    assert not NOT_APPLIED & set(resources), "the placeholder Secret must not be applied"
    # Every image the Deployments use is the one the kustomization retags.
    images = {i["name"] for i in kustomization["images"]}
    for deployment in (api_deployment(), worker_deployment()):
        assert container_of(deployment)["image"].rsplit(":", 1)[0] in images


def test_secret_example_holds_placeholders_only() -> None:
    secret = one_document("Secret", "reelserve-secrets")
    assert "data" not in secret, "use stringData placeholders, not encoded values"
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, f"{key} looks like a real value"


@pytest.mark.parametrize("name", ["reelserve-api", "reelserve-worker"])
def test_env_comes_from_the_configmap_and_secret(name: str) -> None:
    deployment = one_document("Deployment", name)
    configmaps, _, env = env_sources(deployment)
    assert configmaps == {"reelserve-config"}
    data = configmap_data()
    secret_keys = set(one_document("Secret", "reelserve-secrets")["stringData"])
    for var in env.values():
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            assert ref["secretKeyRef"]["name"] == "reelserve-secrets"
            assert ref["secretKeyRef"]["key"] in secret_keys, var["name"]
        if "configMapKeyRef" in ref:
            assert ref["configMapKeyRef"]["name"] == "reelserve-config"
            assert ref["configMapKeyRef"]["key"] in data, var["name"]
    # $(VAR) references in args must resolve from the container's environment.
    for arg in container_of(deployment)["args"]:
        for var in re.findall(r"\$\((\w+)\)", arg):
            assert var in data or var in env, f"{name}: $({var}) is not defined"
    for secret_var in secret_keys:
        assert secret_var not in data, f"{secret_var} must come from the Secret, not the ConfigMap"


def test_configmap_settings() -> None:
    data = configmap_data()
    assert data["REELSERVE_STORAGE"] == "s3"
    assert data["REELSERVE_CONTENT_DELIVERY"] == "presigned"
    assert data["REELSERVE_S3_BUCKET"] and data["REELSERVE_S3_ENDPOINT_URL"].startswith("http")
    url = data["REELSERVE_REDIS_URL"]
    match = re.fullmatch(r"redis://([\w.-]+):(\d+)/\d+", url)
    assert match, url
    host, port = match.groups()
    # KEDA's addressFromEnv wants host:port of the same Redis.
    assert data["KEDA_REDIS_ADDRESS"] == f"{host}:{port}"
    # ...which is the Redis Service of redis.yaml.
    service = one_document("Service", host.split(".")[0])
    assert host.split(".")[1] == NAMESPACE
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    # The key namespace the KEDA stream names are built from (checked below).
    assert data["REELSERVE_REDIS_NAMESPACE"] == DEFAULT_NAMESPACE
    # The API queues for the model the workers serve.
    assert data["REELSERVE_MODEL"] == MODEL
    # Probes and scrapes reach the pod IP.
    assert data["REELSERVE_HOST"] == "0.0.0.0"
    assert int(data["REELSERVE_CLAIM_IDLE_S"]) >= 1
    assert int(data["REELSERVE_MAX_DELIVERIES"]) >= 1


# --- API ------------------------------------------------------------------------------------------


def test_api_deployment() -> None:
    api = api_deployment()
    assert api["spec"]["replicas"] >= 2
    container = container_of(api)
    args = [container["command"][0], *container["args"]]
    assert args[:2] == ["reelserve", "api"]
    assert flag_value(args, "--host") == "0.0.0.0"
    assert int(flag_value(args, "--port")) == API_PORT
    assert flag_value(args, "--redis-url") == "$(REELSERVE_REDIS_URL)"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe_port(container, container[probe]) == API_PORT
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert {"cpu", "memory"} <= resources["limits"].keys()
    assert "nvidia.com/gpu" not in resources["limits"], "the API needs no GPU"
    _, _, env = env_sources(api)
    assert env["REELSERVE_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "reelserve-secrets"


def test_api_service_targets_the_api_pods() -> None:
    api, service = api_deployment(), one_document("Service", "reelserve-api")
    assert labels_match(service["spec"]["selector"], api["spec"]["template"]["metadata"]["labels"])
    ports = {p["name"]: p["containerPort"] for p in container_of(api)["ports"]}
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert (ports[target] if isinstance(target, str) else target) == API_PORT


# --- worker ---------------------------------------------------------------------------------------


def test_worker_runs_the_model_on_one_gpu() -> None:
    worker = worker_deployment()
    container = container_of(worker)
    args = [container["command"][0], *container["args"]]
    assert args[:2] == ["reelserve", "worker"]
    assert flag_value(args, "--model") == MODEL == configmap_data()["REELSERVE_MODEL"]
    assert int(flag_value(args, "--port")) == WORKER_PORT
    assert flag_value(args, "--redis-url") == "$(REELSERVE_REDIS_URL)"
    resources = container["resources"]
    assert str(resources["limits"]["nvidia.com/gpu"]) == "1"
    assert str(resources["requests"].get("nvidia.com/gpu", "1")) == "1"
    assert {"cpu", "memory"} <= resources["requests"].keys()


def test_worker_loads_weights_from_the_shared_volume() -> None:
    """REELSERVE_MODEL_PATH lies on a read-only mount of the weights claim; no hub downloads."""
    worker = worker_deployment()
    container = container_of(worker)
    _, _, env = env_sources(worker)
    model_path = env["REELSERVE_MODEL_PATH"]["value"]
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    mounts = [m for m in container["volumeMounts"] if model_path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{model_path} is on no (or more than one) volume mount"
    assert mounts[0].get("readOnly") is True
    volumes = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mounts[0]["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == MODELS_CLAIM and claim.get("readOnly") is True
    # The example claim is the one the workers mount, and many pods can mount it at once.
    example = one_document("PersistentVolumeClaim", MODELS_CLAIM)
    assert set(example["spec"]["accessModes"]) & {"ReadOnlyMany", "ReadWriteMany"}


def test_worker_probes_wait_out_warm_up() -> None:
    container = container_of(worker_deployment())
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"
    for probe in (readiness, liveness):
        assert probe_port(container, probe) == WORKER_PORT
    assert readiness["initialDelaySeconds"] >= 30
    assert readiness["periodSeconds"] * readiness["failureThreshold"] >= 60
    # Liveness must not kill a worker while it loads the model: either a startup probe covers the
    # load, or liveness itself starts late enough.
    startup = container.get("startupProbe")
    if startup is not None:
        assert startup["httpGet"]["path"] == "/healthz"
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    else:
        assert liveness.get("initialDelaySeconds", 0) >= 300
    # Liveness tolerates a busy worker for at least a minute.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


def test_worker_shutdown_outlasts_the_longest_job() -> None:
    worker = worker_deployment()
    pod = worker["spec"]["template"]["spec"]
    _, _, env = env_sources(worker)
    # The running batch may take the longest job to finish; the grace period adds time to upload,
    # acknowledge and hand back read-ahead jobs after the drain timeout.
    drain_s = int(env["REELSERVE_DRAIN_TIMEOUT_S"]["value"])
    assert drain_s >= LONGEST_JOB_S
    assert pod["terminationGracePeriodSeconds"] >= drain_s + 30
    # SIGTERM is handled by the worker itself; a preStop hook would only delay it.
    assert "lifecycle" not in container_of(worker)
    # KEDA owns the replica count.
    assert "replicas" not in worker["spec"]



# --- PDBs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reelserve-api", "reelserve-worker"])
def test_pdb_selects_its_pods(name: str) -> None:
    pdb, deployment = one_document("PodDisruptionBudget", name), one_document("Deployment", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels_match(pdb["spec"]["selector"]["matchLabels"], labels)
    others = [d for _, d in DOCS if d["kind"] in ("Deployment", "StatefulSet") and d is not deployment]
    for other in others:
        other_labels = other["spec"]["template"]["metadata"]["labels"]
        assert not labels_match(pdb["spec"]["selector"]["matchLabels"], other_labels)
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    if name == "reelserve-api":
        assert pdb["spec"]["minAvailable"] < api_deployment()["spec"]["replicas"], "the API PDB would block every drain"


def test_workload_selectors_match_their_templates() -> None:
    for name, doc in DOCS:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            template_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert labels_match(doc["spec"]["selector"]["matchLabels"], template_labels), name


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_no_latest_tags_or_inline_credentials() -> None:
    for name, doc in DOCS:
        for node in _walk(doc):
            if not isinstance(node, dict):
                continue
            image = node.get("image")
            if isinstance(image, str):
                assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
            secret_like = str(node.get("name", "")).endswith(("SECRET_ACCESS_KEY", "API_KEYS"))
            if secret_like and doc["kind"] in ("Deployment", "StatefulSet"):
                assert "value" not in node, f"{name}: {node['name']} set inline"
