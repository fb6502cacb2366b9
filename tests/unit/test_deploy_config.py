"""The Prometheus configuration and alert rules in deploy/prometheus/, checked by promtool (from
Debian's prometheus package, which `make stack` installs; missing promtool fails, never skips),
plus cheap checks of the other deploy files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"

# The worker's metrics (names agreed with streams/; the alerts may use only these).
WORKER_METRICS = {
    "recstream_events_total",
    "recstream_dlq_total",
    "recstream_event_to_recommendation_seconds",
    "recstream_model_updates_total",
    "recstream_items_encoded_total",
    "recstream_encode_batch_size",
    "recstream_encode_batch_seconds",
    "recstream_online_hit_rate",
    "recstream_redis_errors_total",
    "recstream_redis_up",
    "recstream_redis_pending_writes",
    "recstream_redis_dropped_writes_total",
    "recstream_consumer_lag",
    "recstream_kafka_send_errors_total",
    "recstream_checkpoint_errors_total",
    "recstream_halted",
    "recstream_kafka_up",
    "recstream_offset_resets_total",
    "recstream_offset_lost_messages_total",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: run `make stack` as root (apt-get install -y prometheus)")
    return subprocess.run(
        [exe, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        # Each alert fires on a bad series and stays silent on a healthy one.
        ("test", "rules", "alerts_test.yml"),
    ],
    ids=" ".join,
)
def test_promtool(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_use_only_the_worker_metric_names() -> None:
    text = (PROMETHEUS / "alerts.yml").read_text()
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\brecstream_\w+", text)}
    assert used, "alerts.yml uses no recstream_* metric"
    assert used <= WORKER_METRICS, f"unknown metric names: {sorted(used - WORKER_METRICS)}"
    for alert in (
        "RecstreamWorkerDown",
        "RecstreamDeadLetterRateHigh",
        "RecstreamRecommendationLatencyHigh",
        "RecstreamConsumerLagHigh",
        "RecstreamKafkaSendErrors",
        "RecstreamCheckpointFailing",
        "RecstreamRedisDown",
        "RecstreamRedisWritesPending",
        "RecstreamRedisWritesDropped",
        "RecstreamHalted",
        "RecstreamKafkaUnreachable",
        "RecstreamOffsetsReset",
    ):
        assert f"alert: {alert}" in text


def test_the_alerts_metric_names_are_the_workers() -> None:
    from recstream.adapters.metrics import Metrics

    exposed = set()
    for family in Metrics().registry.collect():
        exposed.add(family.name)
        if family.type == "counter":
            exposed.add(family.name + "_total")
    assert exposed >= WORKER_METRICS, sorted(WORKER_METRICS - exposed)


def test_prometheus_scrapes_the_worker_web_port() -> None:
    text = (PROMETHEUS / "prometheus.yml").read_text()
    assert re.search(r"job_name:\s*recstream\b", text)
    assert '"127.0.0.1:6066"' in text


def test_kafka_pom_pins_exact_versions() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.parse(DEPLOY / "kafka" / "pom.xml").getroot()
    props = {p.tag.split("}")[1]: p.text for p in pom.find("m:properties", ns)}
    assert re.fullmatch(r"4\.\d+\.\d+", props["kafka.version"]), props["kafka.version"]
    versions = [v.text for v in pom.iter("{http://maven.apache.org/POM/4.0.0}version")]
    for version in versions:  # no ranges, no snapshots: the broker under test is reproducible
        assert not re.search(r"[\[\](),]|SNAPSHOT|LATEST|RELEASE", version), version


@pytest.mark.parametrize(
    "script", sorted(DEPLOY.glob("*/*.sh")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_deploy_scripts_parse_and_are_strict(script: Path) -> None:
    result = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "set -euo pipefail" in script.read_text()


def _redis_sh(*args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    result = subprocess.run(
        ["bash", str(DEPLOY / "redis" / "redis.sh"), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def test_redis_state_is_per_port_so_a_second_server_never_shares_the_stack_one() -> None:
    stack = ROOT / ".stack"
    assert _redis_sh("password-file") == f"{stack}/redis/admin.password"
    assert _redis_sh("password-file", REDIS_PORT="6379") == f"{stack}/redis/admin.password"
    assert _redis_sh("password-file", REDIS_PORT="6390") == f"{stack}/redis-6390/admin.password"
    assert _redis_sh("password-file", "recstream-worker", REDIS_STATE="/tmp/r") == (
        "/tmp/r/recstream-worker.password"
    )


def test_no_redis_password_is_published_in_code_or_config() -> None:
    """The worker's password is generated (redis.sh) or given; the admin's too."""
    for path in (
        ROOT / "Makefile",
        DEPLOY / "redis" / "redis.sh",
        DEPLOY / "run.sh",
        ROOT / "recstream" / "config.py",
    ):
        text = path.read_text()
        assert not re.search(r"REDIS_PASSWORD \?= *\S|redis://:[^@/]+@", text), path
