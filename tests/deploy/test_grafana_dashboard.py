"""The Grafana dashboard deploy/grafana/reelserve-dashboard.json: well-formed, has the panels operators
need, and queries only metrics that reelserve exports (parsed from reelserve/metrics.py)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "reelserve-dashboard.json"
METRICS_PY = ROOT / "reelserve" / "metrics.py"
SCRAPE = ROOT / "deploy" / "k8s" / "prometheus-scrape.yaml"
# Exported by the GPU worker (reelserve worker), not defined in reelserve/metrics.py; the panel that
# uses it says so in its description.
DOCUMENTED_EXTERNAL = {"reelserve_gpu_memory_bytes"}

# What prometheus_client exposes for each constructor: the series names a query may use.
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "CounterMetricFamily": ("_total",),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "HistogramMetricFamily": ("_bucket", "_sum", "_count"),
    "Summary": ("", "_sum", "_count", "_created"),
    "SummaryMetricFamily": ("", "_sum", "_count"),
}


def defined_metrics() -> dict[str, str]:
    """Base metric name -> constructor (Counter, Gauge, ...) for every metric created in metrics.py."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(METRICS_PY.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        kind = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if kind not in _SUFFIXES:
            continue
        name_node = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
        assert isinstance(name_node, ast.Constant) and isinstance(name_node.value, str), (
            f"metrics.py line {node.lineno}: {kind} with a non-literal name"
        )
        name = name_node.value
        if kind.startswith("Counter") and name.endswith("_total"):
            name = name[: -len("_total")]
        found[name] = kind
    return found


def exposed_series() -> set[str]:
    return {name + suffix for name, kind in defined_metrics().items() for suffix in _SUFFIXES[kind]}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    """All panels, those nested in collapsed rows included, rows themselves excluded."""
    out = []
    for panel in load_dashboard()["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel.get("targets", [])]


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """reelserve_* series names in a PromQL expression (label values are not names)."""
    return set(re.findall(r"\breelserve_[A-Za-z0-9_:]*", _strip_strings(expr)))


def unknown_metrics(expr: str) -> set[str]:
    return metric_names(expr) - exposed_series() - DOCUMENTED_EXTERNAL


def panel_by_title(fragment: str) -> dict[str, Any]:
    found = [p for p in panels() if fragment.lower() in p["title"].lower()]
    assert len(found) == 1, f"expected one panel titled like {fragment!r}, found {[p['title'] for p in found]}"
    return found[0]


# --- the metric parser itself ---------------------------------------------------------------------


def test_metrics_parser_finds_the_known_metrics() -> None:
    defined = defined_metrics()
    assert len(defined) >= 15, defined
    assert defined["reelserve_end_to_end_seconds"] == "Histogram"
    assert defined["reelserve_tier_queue_wait_seconds"] == "Histogram"
    assert defined["reelserve_batch_size"] == "Histogram"
    assert defined["reelserve_tier_queue_depth"] == "Gauge"
    assert defined["reelserve_rejections"] == "Counter"
    assert defined["reelserve_cache_requests"] == "Counter"
    assert defined["reelserve_jobs"] == "GaugeMetricFamily"
    assert all(name.startswith("reelserve_") for name in defined)


def test_unknown_metric_check_is_not_vacuous() -> None:
    assert unknown_metrics("rate(reelserve_rejections_total[5m])") == set()
    assert unknown_metrics("rate(reelserve_not_a_metric_total[5m])") == {"reelserve_not_a_metric_total"}
    # A histogram has no bare series, a counter no un-suffixed one, a gauge no _total.
    assert unknown_metrics("reelserve_end_to_end_seconds") == {"reelserve_end_to_end_seconds"}
    assert unknown_metrics("rate(reelserve_rejections[5m])") == {"reelserve_rejections"}
    assert unknown_metrics("reelserve_queue_depth_total") == {"reelserve_queue_depth_total"}
    # Label values are not metric names.
    assert metric_names('up{job="reelserve_worker"}') == set()


# --- dashboard structure --------------------------------------------------------------------------


def test_dashboard_metadata() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert "id" not in dashboard or dashboard["id"] is None, "an exported id would clash on import"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"


def test_panels_use_the_datasource_variable() -> None:
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("targets"), f"{panel['title']}: no queries"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panel_ids_unique_and_layout_does_not_overlap() -> None:
    all_panels = load_dashboard()["panels"]
    ids = [p["id"] for p in all_panels] + [c["id"] for p in all_panels for c in p.get("panels", [])]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_expressions_are_balanced() -> None:
    for panel in panels():
        for expr in exprs(panel):
            stack = []
            for ch in _strip_strings(expr):
                if ch in "([{":
                    stack.append(ch)
                elif ch in ")]}":
                    assert stack and "([{"[")]}".index(ch)] == stack.pop(), f"{panel['title']}: {expr}"
            assert not stack, f"{panel['title']}: unbalanced {expr}"


# --- every metric exists --------------------------------------------------------------------------


def test_every_reelserve_metric_exists() -> None:
    used: set[str] = set()
    for panel in panels():
        for expr in exprs(panel):
            assert not unknown_metrics(expr), f"{panel['title']}: unknown {unknown_metrics(expr)} in {expr}"
            used |= metric_names(expr)
    assert used, "no reelserve_* metric queried at all"


def test_external_metrics_are_documented_in_their_panels() -> None:
    for panel in panels():
        for name in DOCUMENTED_EXTERNAL & {m for e in exprs(panel) for m in metric_names(e)}:
            description = panel.get("description", "")
            assert name in description and "worker" in description.lower(), panel["title"]


def test_histogram_quantile_reads_buckets_by_le() -> None:
    quantile_exprs = [e for p in panels() for e in exprs(p) if "histogram_quantile" in e]
    assert quantile_exprs
    for expr in quantile_exprs:
        names = metric_names(expr)
        assert names and all(n.endswith("_bucket") for n in names), expr
        assert re.search(r"by \(([^)]*\b)?le\b", expr), f"buckets not aggregated by le: {expr}"
        assert "rate(" in expr, f"histogram_quantile over raw counters: {expr}"


def test_scrape_jobs_named_in_queries_exist() -> None:
    scrape = next(d for d in yaml.safe_load_all(SCRAPE.read_text()) if d)
    jobs = {j["job_name"] for j in yaml.safe_load(scrape["data"]["prometheus.yml"])["scrape_configs"]}
    for panel in panels():
        for expr in exprs(panel):
            for job in re.findall(r'job="([^"]+)"', expr):
                assert job in jobs, f"{panel['title']}: job {job!r} is not scraped"


# --- the required panels --------------------------------------------------------------------------


def _quantiles(expr_list: list[str], metric: str) -> set[float]:
    return {
        float(q)
        for e in expr_list
        for q in re.findall(r"histogram_quantile\(\s*([0-9.]+)\s*,", e)
        if metric in e
    }


def test_queue_depth_per_tier() -> None:
    panel = panel_by_title("queue depth per tier")
    assert any("reelserve_tier_queue_depth" in e and re.search(r"by \(tier\)", e) for e in exprs(panel))


def test_end_to_end_latency_quantiles() -> None:
    panel = panel_by_title("end-to-end latency")
    assert {0.5, 0.95, 0.99} <= _quantiles(exprs(panel), "reelserve_end_to_end_seconds_bucket")
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_queue_wait_per_tier() -> None:
    panel = panel_by_title("queue wait per tier")
    tiered = [e for e in exprs(panel) if "reelserve_tier_queue_wait_seconds_bucket" in e]
    assert tiered and all(re.search(r"by \(le, tier\)|by \(tier, le\)", e) for e in tiered)
    assert _quantiles(tiered, "reelserve_tier_queue_wait_seconds_bucket")


def test_batch_size_distribution() -> None:
    panel = panel_by_title("batch size distribution")
    assert any("reelserve_batch_size_bucket" in e for e in exprs(panel))


def test_cache_hit_rate() -> None:
    panel = panel_by_title("cache hit rate")
    first = exprs(panel)[0]
    assert "reelserve_cache_requests_total" in first and 'result="hit"' in first and "/" in first
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_rejections_by_reason() -> None:
    panel = panel_by_title("rejections by reason")
    assert any("reelserve_rejections_total" in e and re.search(r"by \(reason\)", e) for e in exprs(panel))


def test_worker_count() -> None:
    panel = panel_by_title("worker count")
    assert any('count(up{job="reelserve-worker"} == 1)' in e for e in exprs(panel))


def test_gpu_memory() -> None:
    panel = panel_by_title("gpu memory")
    assert any("reelserve_gpu_memory_bytes" in e for e in exprs(panel))
    assert panel["fieldConfig"]["defaults"]["unit"] == "bytes"
