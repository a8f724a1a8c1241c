"""The services the reelserve pods lean on, as deploy/k8s declares them: Redis (durable, never
evicting, reachable by the pods) and the Prometheus scrape jobs (each keeps its own pods, and only
those). No cluster needed; every check fails, never skips."""

from __future__ import annotations

import re

import yaml

from k8s_documents import (
    API_PORT,
    K8S,
    NAMESPACE,
    WORKER_PORT,
    Doc,
    api_deployment,
    container_of,
    flag_value,
    labels_match,
    one_document,
    worker_deployment,
)


# --- Redis ----------------------------------------------------------------------------------------


def test_redis_is_durable() -> None:
    redis = one_document("StatefulSet", "reelserve-redis")
    container = container_of(redis)
    args = [*container.get("command", []), *container.get("args", [])]
    assert flag_value(args, "--appendonly") == "yes"
    assert flag_value(args, "--appendfsync") in ("everysec", "always"), "the queue must survive a Redis restart"
    assert flag_value(args, "--maxmemory-policy") == "noeviction", "stream entries must never be evicted"
    # Redis >= 7: KEDA's lag trigger reads XINFO GROUPS lag.
    tag = container["image"].rsplit(":", 1)[1]
    assert int(tag.split(".")[0]) >= 7
    # The data directory is on the PVC.
    claims = {t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[flag_value(args, "--dir")] in claims
    assert redis["spec"]["replicas"] == 1


def test_redis_services() -> None:
    redis = one_document("StatefulSet", "reelserve-redis")
    labels = redis["spec"]["template"]["metadata"]["labels"]
    headless = one_document("Service", redis["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    service = one_document("Service", "reelserve-redis")
    for svc in (headless, service):
        assert labels_match(svc["spec"]["selector"], labels)
        assert [p["port"] for p in svc["spec"]["ports"]] == [6379]
    assert "managed" in (K8S / "redis.yaml").read_text().lower(), "comment on managed Redis is missing"


# --- Prometheus -----------------------------------------------------------------------------------


def _scrape_jobs() -> dict[str, Doc]:
    config = yaml.safe_load(one_document("ConfigMap", "reelserve-prometheus-scrape")["data"]["prometheus.yml"])
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
    for job_name, deployment, port in (("reelserve-api", api_deployment(), API_PORT),
                                       ("reelserve-worker", worker_deployment(), WORKER_PORT)):
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
        for other_name, other in (("reelserve-api", api_deployment()), ("reelserve-worker", worker_deployment())):
            if other_name != job_name:
                other_meta = other["spec"]["template"]["metadata"]
                assert not _relabel_keeps(job, other_meta["labels"], other_meta["annotations"])
        named_ports = {p["name"] for p in container_of(deployment)["ports"]}
        port_rules = [r for r in job["relabel_configs"]
                      if r.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"]]
        assert all(re.fullmatch(r["regex"], n) for r in port_rules for n in named_ports)
