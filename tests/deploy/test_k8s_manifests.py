"""The Kubernetes manifests under deploy/k8s: schema-valid (offline, strict) and consistent with each
other and with the processes they run (stream names and consumer group come from the code that
builds them). No cluster needed; every check fails, never skips."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from reelserve.redis_names import BROKER_GROUP, DEFAULT_NAMESPACE, RedisKeys
from reelserve.schemas.slo import DEFAULT_TIERS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The Kubernetes version whose bundled (offline) schemas every built-in kind is validated against.
K8S_VERSION = "1.30.0"
NAMESPACE = "reelserve"
MODEL = "wan2.2-ti2v-5b"
WORKER_PORT = 9100
API_PORT = 8000
# The priority levels the API queues on: one stream per level.
LEVELS = sorted(tier.level for tier in DEFAULT_TIERS)
# A Wan2.2 video at the largest size and step count takes up to this long on one GPU.
LONGEST_JOB_S = 900
MODELS_CLAIM = "reelserve-models"
# Files present but deliberately not applied by kustomization.yaml.
NOT_APPLIED = {"secret.example.yaml", "models-pvc.example.yaml"}
CUSTOM_GROUPS = ("keda.sh/", "kustomize.config.k8s.io/")

EXPECTED_FILES = {
    "namespace.yaml",
    "api-deployment.yaml",
    "worker-deployment.yaml",
    "keda-scaledobject.yaml",
    "pdb.yaml",
    "redis.yaml",
    "configmap.yaml",
    "secret.example.yaml",
    "models-pvc.example.yaml",
    "prometheus-scrape.yaml",
    "kustomization.yaml",
}

Doc = dict[str, Any]


def _load() -> list[tuple[str, Doc]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


DOCS = _load()


def _id(item: tuple[str, Doc]) -> str:
    name, doc = item
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _one(kind: str, name: str) -> Doc:
    found = [d for _, d in DOCS if d.get("kind") == kind and d.get("metadata", {}).get("name") == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def _container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: expected one container"
    return containers[0]


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _flag(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def _configmap_data() -> dict[str, str]:
    return _one("ConfigMap", "reelserve-config")["data"]


def _worker() -> Doc:
    return _one("Deployment", "reelserve-worker")


def _api() -> Doc:
    return _one("Deployment", "reelserve-api")


def _scaled_object() -> Doc:
    return _one("ScaledObject", "reelserve-worker")


def _probe_port(container: Doc, probe: Doc) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"probe port {port!r} is not a named container port"
    return named[port]


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
    assert _one("Namespace", NAMESPACE)


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


@pytest.mark.parametrize("item", BUILTIN_PARAMS, ids=[_id(i) for i in BUILTIN_PARAMS])
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
    for deployment in (_api(), _worker()):
        assert _container(deployment)["image"].rsplit(":", 1)[0] in images


def test_secret_example_holds_placeholders_only() -> None:
    secret = _one("Secret", "reelserve-secrets")
    assert "data" not in secret, "use stringData placeholders, not encoded values"
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, f"{key} looks like a real value"


def _env_sources(deployment: Doc) -> tuple[set[str], set[str], dict[str, Doc]]:
    container = _container(deployment)
    configmaps = {e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e}
    secrets = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    env = {e["name"]: e for e in container.get("env", [])}
    return configmaps, secrets, env


@pytest.mark.parametrize("name", ["reelserve-api", "reelserve-worker"])
def test_env_comes_from_the_configmap_and_secret(name: str) -> None:
    deployment = _one("Deployment", name)
    configmaps, _, env = _env_sources(deployment)
    assert configmaps == {"reelserve-config"}
    data = _configmap_data()
    secret_keys = set(_one("Secret", "reelserve-secrets")["stringData"])
    for var in env.values():
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            assert ref["secretKeyRef"]["name"] == "reelserve-secrets"
            assert ref["secretKeyRef"]["key"] in secret_keys, var["name"]
        if "configMapKeyRef" in ref:
            assert ref["configMapKeyRef"]["name"] == "reelserve-config"
            assert ref["configMapKeyRef"]["key"] in data, var["name"]
    # $(VAR) references in args must resolve from the container's environment.
    for arg in _container(deployment)["args"]:
        for var in re.findall(r"\$\((\w+)\)", arg):
            assert var in data or var in env, f"{name}: $({var}) is not defined"
    for secret_var in secret_keys:
        assert secret_var not in data, f"{secret_var} must come from the Secret, not the ConfigMap"


def test_configmap_settings() -> None:
    data = _configmap_data()
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
    service = _one("Service", host.split(".")[0])
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
    api = _api()
    assert api["spec"]["replicas"] >= 2
    container = _container(api)
    args = [container["command"][0], *container["args"]]
    assert args[:2] == ["reelserve", "api"]
    assert _flag(args, "--host") == "0.0.0.0"
    assert int(_flag(args, "--port")) == API_PORT
    assert _flag(args, "--redis-url") == "$(REELSERVE_REDIS_URL)"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert _probe_port(container, container[probe]) == API_PORT
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert {"cpu", "memory"} <= resources["limits"].keys()
    assert "nvidia.com/gpu" not in resources["limits"], "the API needs no GPU"
    _, _, env = _env_sources(api)
    assert env["REELSERVE_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "reelserve-secrets"


def test_api_service_targets_the_api_pods() -> None:
    api, service = _api(), _one("Service", "reelserve-api")
    assert _labels_match(service["spec"]["selector"], api["spec"]["template"]["metadata"]["labels"])
    ports = {p["name"]: p["containerPort"] for p in _container(api)["ports"]}
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert (ports[target] if isinstance(target, str) else target) == API_PORT


# --- worker ---------------------------------------------------------------------------------------


def test_worker_runs_the_model_on_one_gpu() -> None:
    worker = _worker()
    container = _container(worker)
    args = [container["command"][0], *container["args"]]
    assert args[:2] == ["reelserve", "worker"]
    assert _flag(args, "--model") == MODEL == _configmap_data()["REELSERVE_MODEL"]
    assert int(_flag(args, "--port")) == WORKER_PORT
    assert _flag(args, "--redis-url") == "$(REELSERVE_REDIS_URL)"
    resources = container["resources"]
    assert str(resources["limits"]["nvidia.com/gpu"]) == "1"
    assert str(resources["requests"].get("nvidia.com/gpu", "1")) == "1"
    assert {"cpu", "memory"} <= resources["requests"].keys()


def test_worker_loads_weights_from_the_shared_volume() -> None:
    """REELSERVE_MODEL_PATH lies on a read-only mount of the weights claim; no hub downloads."""
    worker = _worker()
    container = _container(worker)
    _, _, env = _env_sources(worker)
    model_path = env["REELSERVE_MODEL_PATH"]["value"]
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    mounts = [m for m in container["volumeMounts"] if model_path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{model_path} is on no (or more than one) volume mount"
    assert mounts[0].get("readOnly") is True
    volumes = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mounts[0]["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == MODELS_CLAIM and claim.get("readOnly") is True
    # The example claim is the one the workers mount, and many pods can mount it at once.
    example = _one("PersistentVolumeClaim", MODELS_CLAIM)
    assert set(example["spec"]["accessModes"]) & {"ReadOnlyMany", "ReadWriteMany"}


def test_worker_probes_wait_out_warm_up() -> None:
    container = _container(_worker())
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"
    for probe in (readiness, liveness):
        assert _probe_port(container, probe) == WORKER_PORT
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
    worker = _worker()
    pod = worker["spec"]["template"]["spec"]
    _, _, env = _env_sources(worker)
    # The running batch may take the longest job to finish; the grace period adds time to upload,
    # acknowledge and hand back read-ahead jobs after the drain timeout.
    drain_s = int(env["REELSERVE_DRAIN_TIMEOUT_S"]["value"])
    assert drain_s >= LONGEST_JOB_S
    assert pod["terminationGracePeriodSeconds"] >= drain_s + 30
    # SIGTERM is handled by the worker itself; a preStop hook would only delay it.
    assert "lifecycle" not in _container(worker)
    # KEDA owns the replica count.
    assert "replicas" not in worker["spec"]


# --- KEDA -----------------------------------------------------------------------------------------

_COUNT = {"type": "string", "pattern": r"^[0-9]+$"}
SCALED_OBJECT_SCHEMA: Doc = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
        },
        "spec": {
            "type": "object",
            "required": [
                "scaleTargetRef", "triggers", "minReplicaCount", "maxReplicaCount", "pollingInterval",
                "cooldownPeriod",
            ],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer", "minimum": 1},
                    },
                },
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                            # KEDA trigger metadata values are strings, numbers included.
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}

# The redis-streams scaler's documented metadata (KEDA docs, scalers/redis-streams).
REDIS_STREAMS_METADATA_SCHEMA: Doc = {
    "type": "object",
    "required": ["stream"],
    "additionalProperties": False,
    "properties": {
        "address": {"type": "string"},
        "addressFromEnv": {"type": "string"},
        "host": {"type": "string"},
        "hostFromEnv": {"type": "string"},
        "port": {"type": "string"},
        "portFromEnv": {"type": "string"},
        "usernameFromEnv": {"type": "string"},
        "passwordFromEnv": {"type": "string"},
        "stream": {"type": "string", "minLength": 1},
        "consumerGroup": {"type": "string"},
        "pendingEntriesCount": _COUNT,
        "streamLength": _COUNT,
        "lagCount": _COUNT,
        "activationLagCount": _COUNT,
        "enableTLS": {"enum": ["true", "false"]},
        "unsafeSsl": {"enum": ["true", "false"]},
        "databaseIndex": _COUNT,
    },
    "anyOf": [
        {"required": ["address"]},
        {"required": ["addressFromEnv"]},
        {"required": ["host"]},
        {"required": ["hostFromEnv"]},
    ],
    # lagCount needs activationLagCount (KEDA docs), and both need a consumer group.
    "dependentRequired": {"lagCount": ["activationLagCount", "consumerGroup"]},
}


def test_scaled_object_matches_schema() -> None:
    scaled = _scaled_object()
    jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA).validate(scaled)
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "redis-streams"
        jsonschema.Draft202012Validator(REDIS_STREAMS_METADATA_SCHEMA).validate(trigger["metadata"])


def test_schemas_reject_a_broken_scaled_object() -> None:
    """The hand-written schemas are not vacuous."""
    broken = yaml.safe_load(yaml.safe_dump(_scaled_object()))
    broken["spec"]["triggers"][0]["metadata"]["lagCount"] = 2
    broken["spec"]["triggers"][0]["metadata"]["lagcount"] = "2"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA).validate(broken)
    metadata_validator = jsonschema.Draft202012Validator(REDIS_STREAMS_METADATA_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        metadata_validator.validate(broken["spec"]["triggers"][0]["metadata"])
    no_activation = {"stream": "s", "consumerGroup": "g", "lagCount": "2", "address": "r:6379"}
    with pytest.raises(jsonschema.ValidationError):
        metadata_validator.validate(no_activation)


# How KEDA's redis-streams scaler picks its mode: a consumer group and lagCount -> XINFO GROUPS lag;
# a consumer group alone -> XPENDING count; no group -> XLEN. The other modes' targets are ignored.
_MODE_TARGET = {"lag": "lagCount", "pending": "pendingEntriesCount", "length": "streamLength"}
_STREAM = re.compile(r"\{(?P<namespace>[^{}]+)\}:stream:(?P<model>[^:]+):(?P<level>\d+)")


def _mode(metadata: dict[str, str]) -> str:
    if metadata.get("consumerGroup"):
        return "lag" if int(metadata.get("lagCount", "0")) != 0 else "pending"
    return "length"


def test_scaled_object_targets_the_worker_deployment() -> None:
    scaled, worker = _scaled_object(), _worker()
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"] == worker["metadata"]["name"] == "reelserve-worker"
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert scaled["metadata"]["namespace"] == worker["metadata"]["namespace"]
    assert spec["minReplicaCount"] in (0, 1)
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= 16
    assert spec["pollingInterval"] > 0 and spec["cooldownPeriod"] > 0
    # KEDA rejects a ScaledObject whose trigger names repeat.
    names = [t.get("name") for t in spec["triggers"]]
    assert all(names) and len(set(names)) == len(names), names


def test_scaled_object_watches_every_level_stream() -> None:
    """One trigger per (mode, level): backlog (lag), in flight (pending) and total (length), each on
    the stream the code names for (namespace, model, level)."""
    spec, worker = _scaled_object()["spec"], _worker()
    model = _flag(_container(worker)["args"], "--model")
    namespace = _configmap_data()["REELSERVE_REDIS_NAMESPACE"]
    _, _, env = _env_sources(worker)
    seen: Counter[tuple[str, int]] = Counter()
    addresses = set()
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis-streams"
        meta = trigger["metadata"]
        match = _STREAM.fullmatch(meta["stream"])
        assert match, f"{meta['stream']!r} is not {{<namespace>}}:stream:<model>:<level>"
        level = int(match["level"])
        assert (match["namespace"], match["model"]) == (namespace, model)
        assert meta["stream"] == RedisKeys(namespace).stream(model, level)
        mode = _mode(meta)
        seen[mode, level] += 1
        # The target is set explicitly (not KEDA's default of 5), and no other mode's target sits
        # there looking as if it applied.
        assert int(meta[_MODE_TARGET[mode]]) >= 1, trigger["name"]
        assert not {k for m, k in _MODE_TARGET.items() if m != mode} & meta.keys(), trigger["name"]
        if mode != "length":
            assert meta["consumerGroup"] == BROKER_GROUP == "workers"
        assert int(meta.get("activationLagCount", "0")) == 0, "one queued job must wake a worker"
        addresses.add(meta.get("addressFromEnv"))
    assert seen == Counter({(mode, level): 1 for mode in _MODE_TARGET for level in LEVELS}), seen
    # One Redis, read through the worker's env (KEDA resolves addressFromEnv from the scale target).
    assert len(addresses) == 1
    (address,) = addresses
    assert address in env, f"{address} is not in the worker's env"
    assert env[address]["valueFrom"]["configMapKeyRef"]["key"] == address


def test_stream_pattern_matches_the_code() -> None:
    """The literal names in the manifest follow the key layout of reelserve/redis_names.py."""
    keys = RedisKeys(DEFAULT_NAMESPACE)
    assert keys.stream(MODEL, 0) == f"{{reelserve}}:stream:{MODEL}:0"
    assert keys.dead_letters(MODEL) == f"{{reelserve}}:dead:{MODEL}"
    for level in LEVELS:
        match = _STREAM.fullmatch(keys.stream(MODEL, level))
        assert match and int(match["level"]) == level
    assert LEVELS == [0, 1, 2]


# --- PDBs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reelserve-api", "reelserve-worker"])
def test_pdb_selects_its_pods(name: str) -> None:
    pdb, deployment = _one("PodDisruptionBudget", name), _one("Deployment", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _labels_match(pdb["spec"]["selector"]["matchLabels"], labels)
    others = [d for _, d in DOCS if d["kind"] in ("Deployment", "StatefulSet") and d is not deployment]
    for other in others:
        other_labels = other["spec"]["template"]["metadata"]["labels"]
        assert not _labels_match(pdb["spec"]["selector"]["matchLabels"], other_labels)
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    if name == "reelserve-api":
        assert pdb["spec"]["minAvailable"] < _api()["spec"]["replicas"], "the API PDB would block every drain"


def test_workload_selectors_match_their_templates() -> None:
    for name, doc in DOCS:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            template_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert _labels_match(doc["spec"]["selector"]["matchLabels"], template_labels), name


# --- Redis ----------------------------------------------------------------------------------------


def test_redis_is_durable() -> None:
    redis = _one("StatefulSet", "reelserve-redis")
    container = _container(redis)
    args = [*container.get("command", []), *container.get("args", [])]
    assert _flag(args, "--appendonly") == "yes"
    assert _flag(args, "--appendfsync") in ("everysec", "always"), "the queue must survive a Redis restart"
    assert _flag(args, "--maxmemory-policy") == "noeviction", "stream entries must never be evicted"
    # Redis >= 7: KEDA's lag trigger reads XINFO GROUPS lag.
    tag = container["image"].rsplit(":", 1)[1]
    assert int(tag.split(".")[0]) >= 7
    # The data directory is on the PVC.
    claims = {t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[_flag(args, "--dir")] in claims
    assert redis["spec"]["replicas"] == 1


def test_redis_services() -> None:
    redis = _one("StatefulSet", "reelserve-redis")
    labels = redis["spec"]["template"]["metadata"]["labels"]
    headless = _one("Service", redis["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    service = _one("Service", "reelserve-redis")
    for svc in (headless, service):
        assert _labels_match(svc["spec"]["selector"], labels)
        assert [p["port"] for p in svc["spec"]["ports"]] == [6379]
    assert "managed" in (K8S / "redis.yaml").read_text().lower(), "comment on managed Redis is missing"


# --- Prometheus -----------------------------------------------------------------------------------


def _scrape_jobs() -> dict[str, Doc]:
    config = yaml.safe_load(_one("ConfigMap", "reelserve-prometheus-scrape")["data"]["prometheus.yml"])
    return {job["job_name"]: job for job in config["scrape_configs"]}


def _relabel_keeps(job: Doc, labels: dict[str, str], annotations: dict[str, str]) -> bool:
    """Apply the job's `keep` relabel rules to a pod's meta labels, the way Prometheus would."""

    def meta(source: str) -> str:
        for prefix, values in (("__meta_kubernetes_pod_label_", labels),
                               ("__meta_kubernetes_pod_annotation_", annotations)):
            if source.startswith(prefix):
                wanted = source[len(prefix):]
                return next((v for k, v in values.items() if re.sub(r"[^A-Za-z0-9_]", "_", k) == wanted), "")
        if source == "__meta_kubernetes_pod_container_port_name":
            return "http"
        raise AssertionError(f"unexpected source label {source}")

    for rule in job["relabel_configs"]:
        if rule.get("action") != "keep":
            continue
        value = rule.get("separator", ";").join(meta(s) for s in rule["source_labels"])
        if not re.fullmatch(rule["regex"], value):
            return False
    return True


def test_prometheus_scrapes_api_and_workers() -> None:
    jobs = _scrape_jobs()
    assert {"reelserve-api", "reelserve-worker"} <= jobs.keys()
    for job_name, deployment, port in (("reelserve-api", _api(), API_PORT),
                                       ("reelserve-worker", _worker(), WORKER_PORT)):
        job = jobs[job_name]
        assert [sd["role"] for sd in job["kubernetes_sd_configs"]] == ["pod"]
        assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [NAMESPACE]
        meta = deployment["spec"]["template"]["metadata"]
        annotations = meta["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port
        assert annotations["prometheus.io/path"] == "/metrics"
        assert _relabel_keeps(job, meta["labels"], annotations), f"{job_name} drops its own pods"
        # ...and only its own pods.
        for other_name, other in (("reelserve-api", _api()), ("reelserve-worker", _worker())):
            if other_name != job_name:
                other_meta = other["spec"]["template"]["metadata"]
                assert not _relabel_keeps(job, other_meta["labels"], other_meta["annotations"])
        named_ports = {p["name"] for p in _container(deployment)["ports"]}
        port_rules = [r for r in job["relabel_configs"]
                      if r.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"]]
        assert all(re.fullmatch(r["regex"], n) for r in port_rules for n in named_ports)


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
