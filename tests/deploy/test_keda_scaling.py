"""The KEDA ScaledObject of deploy/k8s: valid against KEDA's schema (offline), aimed at the worker
Deployment, and watching every stream the API queues on, under the names and consumer group the
broker's code builds."""

from __future__ import annotations

import re
from collections import Counter

import jsonschema
import pytest
import yaml

from k8s_documents import (
    Doc,
    LEVELS,
    MODEL,
    configmap_data,
    container_of,
    env_sources,
    flag_value,
    scaled_object,
    worker_deployment,
)

from reelserve.redis_names import BROKER_GROUP, DEFAULT_NAMESPACE, RedisKeys


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
    scaled = scaled_object()
    jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA).validate(scaled)
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "redis-streams"
        jsonschema.Draft202012Validator(REDIS_STREAMS_METADATA_SCHEMA).validate(trigger["metadata"])


def test_schemas_reject_a_broken_scaled_object() -> None:
    """The hand-written schemas are not vacuous."""
    broken = yaml.safe_load(yaml.safe_dump(scaled_object()))
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
    scaled, worker = scaled_object(), worker_deployment()
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
    spec, worker = scaled_object()["spec"], worker_deployment()
    model = flag_value(container_of(worker)["args"], "--model")
    namespace = configmap_data()["REELSERVE_REDIS_NAMESPACE"]
    _, _, env = env_sources(worker)
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
