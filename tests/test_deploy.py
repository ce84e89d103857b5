"""examples/deploy: the dashboard and scrape config name metrics the server really serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.certificates import self_signed
from tests.client import transcribe
from tests.serving import REPO, running_server

DEPLOY = REPO / "examples" / "deploy"


def test_grafana_dashboard_uses_only_real_metric_names(voices) -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for e in exprs
        for m in re.findall(r"\b(asr_\w+|speechgw_\w+)", e)
    }
    with running_server(backends={"null": {"type": "scripted", "text": "x"}}) as server:
        transcribe(server.ws, voices["children"].read_bytes())
        served = set(re.findall(r"^# TYPE (\w+) ", server.get("/metrics")[1], re.M))
    assert used and used <= served, used - served
    assert {
        "asr_requests_total",
        "asr_audio_seconds_total",
        "asr_processing_seconds",
        "asr_postprocess_seconds",
    } <= used


def test_prometheus_scrapes_every_replica_and_grafana_sums_them() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (targets,) = [c["targets"] for c in job["static_configs"]]
    assert len(targets) >= 2  # each gateway directly, not one address behind the balancer
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # one line per fleet, not per replica: every expression aggregates over instances
    assert all(e.startswith(("sum", "histogram_quantile(")) for e in exprs), exprs
    assert all("sum" in e for e in exprs), exprs


def test_nginx_config_is_valid_and_proxies_both_paths(tmp_path) -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    assert "ws/transcribe" in text and "api/core/google/asr" in text
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed here: only the paths were checked")
    cert, key = self_signed(tmp_path, host="asr.example.com")
    text = text.replace("/etc/ssl/certs/asr.example.com.pem", str(cert))
    text = text.replace("/etc/ssl/private/asr.example.com.key", str(key))
    wrapper = tmp_path / "nginx.conf"
    wrapper.write_text(f"events {{}}\nhttp {{\n{text}\n}}\n")
    result = subprocess.run(["nginx", "-t", "-c", str(wrapper)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
