"""The Kubernetes manifests under deploy/k8s as documents, and what the tests of them share: the
expected files, the deployment's names and ports, and lookups of one document or container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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


def load_documents() -> list[tuple[str, Doc]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


DOCS = load_documents()


def document_id(item: tuple[str, Doc]) -> str:
    name, doc = item
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def one_document(kind: str, name: str) -> Doc:
    found = [d for _, d in DOCS if d.get("kind") == kind and d.get("metadata", {}).get("name") == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def container_of(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: expected one container"
    return containers[0]


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def flag_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def configmap_data() -> dict[str, str]:
    return one_document("ConfigMap", "reelserve-config")["data"]


def worker_deployment() -> Doc:
    return one_document("Deployment", "reelserve-worker")


def api_deployment() -> Doc:
    return one_document("Deployment", "reelserve-api")


def scaled_object() -> Doc:
    return one_document("ScaledObject", "reelserve-worker")


def probe_port(container: Doc, probe: Doc) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"probe port {port!r} is not a named container port"
    return named[port]


def env_sources(deployment: Doc) -> tuple[set[str], set[str], dict[str, Doc]]:
    container = container_of(deployment)
    configmaps = {e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e}
    secrets = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    env = {e["name"]: e for e in container.get("env", [])}
    return configmaps, secrets, env
