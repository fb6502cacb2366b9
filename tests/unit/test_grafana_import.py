"""deploy/grafana/import-check.sh: the dashboard decodes under the strict decoder of the Grafana
Foundation SDK (Grafana's published dashboard, panel and Prometheus query schemas), and broken
copies of it do not.

The check is a Go program built on first use into .cache/grafana/ (modules from the Go module
proxy into .cache/go/, about a minute the first time, cached after). Go or the proxy missing
fails these tests with the script's message; nothing here skips."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
SCRIPT = GRAFANA / "import-check.sh"
DASHBOARD = GRAFANA / "recstream.json"
# The first build downloads the SDK (~13 MB) and compiles it: minutes on a loaded 2-core machine.
BUILD_TIMEOUT_S = 900

# A missing field that Grafana fills in on load is reported as "defaulted", never a problem:
# a panel option or custom field config left out (the plugin's default applies), and a
# variable's current value (resolved from its query).
DEFAULTED_PREFIXES = ("options.", "fieldConfig.defaults.custom.")


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def run_check(*files: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), "check", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env=env,
    )


def reports(proc: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def checker() -> None:
    """Builds the checker once (a no-op when .cache/grafana/importcheck is up to date)."""
    proc = subprocess.run(
        [str(SCRIPT), "install"], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{SCRIPT.relative_to(ROOT)} install failed (exit {proc.returncode}); it needs Go "
            f"and the Go module proxy on the first build:\n{proc.stderr}{proc.stdout}"
        )


def test_the_dashboard_passes_the_import_check(checker: None) -> None:
    proc = run_check()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (report,) = reports(proc)
    assert report["problems"] == []

    # The checker went through every panel and query of the file, not an empty decode.
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = list(iter_panels(dashboard["panels"]))
    assert report["panels"] == dict(Counter(p["type"] for p in panels))
    targets = sum(len(p.get("targets") or []) for p in panels)
    assert targets > 40
    assert report["queries"] == {"prometheus": targets}
    assert set(report["set_aside"]) <= {"__requires", "__inputs", "__elements"}
    for path in report["defaulted"]:
        where = path.split(".", 1)[1] if path.startswith("panels[") else path
        if path.startswith("templating.list["):
            assert path.endswith((".current.text", ".current.value")), path
        else:
            assert where.startswith(DEFAULTED_PREFIXES), path


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A fault: set the value at a dotted path ("panels.1.options.x")."""

    def mutate(dashboard: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = dashboard
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _pop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = dashboard
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node.pop(last)

    return mutate


# Panel 1 is the first stat panel, 10 the first time series (the test below asserts so).
STAT, SERIES = 1, 10
# (fault, expected substring of one problem): unknown fields, wrong types and missing required
# fields at each level the SDK has a schema for, enum values, and a non-Prometheus query.
FAULTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown top-level field": (_set("titel", "x"), "unexpected field 'titel'"),
    "wrong type: refresh": (_set("refresh", 30), "refresh: json: cannot unmarshal number"),
    "unknown panel field": (
        _set(f"panels.{STAT}.gridpos", {}),
        f"panels[{STAT}].Panel: unexpected field 'gridpos'",
    ),
    "wrong type: gridPos.h": (
        _set(f"panels.{STAT}.gridPos.h", "4"),
        f"panels[{STAT}].gridPos.h: json: cannot unmarshal string",
    ),
    "unknown stat option": (
        _set(f"panels.{STAT}.options.reduceOption", {}),
        "unexpected field 'reduceOption'",
    ),
    "wrong type: stat option": (
        _set(f"panels.{STAT}.options.wideLayout", "yes"),
        f"panels[{STAT}].options.wideLayout: json: cannot unmarshal string",
    ),
    "unknown custom field config": (
        _set(f"panels.{SERIES}.fieldConfig.defaults.custom.lineWidht", 1),
        "unexpected field 'lineWidht'",
    ),
    "unknown field config default": (
        _set(f"panels.{SERIES}.fieldConfig.defaults.unti", "s"),
        f"panels[{SERIES}].fieldConfig.defaults.FieldConfig: unexpected field 'unti'",
    ),
    "wrong type: threshold value": (
        _set(f"panels.{STAT}.fieldConfig.defaults.thresholds.steps.1.value", "one"),
        "thresholds.steps[1].value: json: cannot unmarshal string",
    ),
    "unknown query field": (
        _set(f"panels.{STAT}.targets.0.exprr", "up"),
        f"panels[{STAT}].targets[0].Dataquery: unexpected field 'exprr'",
    ),
    "wrong type: query expr": (
        _set(f"panels.{STAT}.targets.0.expr", 1),
        f"panels[{STAT}].targets[0].expr: json: cannot unmarshal number",
    ),
    "missing query expr": (
        _pop(f"panels.{STAT}.targets.0.expr"),
        f"panels[{STAT}].targets[0].expr: required field is missing",
    ),
    "query on another datasource type": (
        _set(f"panels.{STAT}.targets.0.datasource.type", "loki"),
        'datasource type "loki", not Prometheus',
    ),
    "unknown panel type": (
        _set(f"panels.{SERIES}.type", "timeseriez"),
        'no schema for panel type "timeseriez"',
    ),
    "enum: legend display mode": (
        _set(f"panels.{SERIES}.options.legend.displayMode", "tabel"),
        '"tabel" is not a LegendDisplayMode',
    ),
    "enum: variable type": (
        _set("templating.list.1.type", "queryy"),
        '"queryy" is not a VariableType',
    ),
    "schema rule: fiscalYearStartMonth": (
        _set("fiscalYearStartMonth", 12),
        "fiscalYearStartMonth: must be < 12",
    ),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_a_broken_copy_fails(checker: None, tmp_path: Path, fault: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["panels"][STAT]["type"] == "stat"
    assert dashboard["panels"][SERIES]["type"] == "timeseries"
    mutate, expected = FAULTS[fault]
    broken = copy.deepcopy(dashboard)
    mutate(broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken), encoding="utf-8")

    proc = run_check(path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (report,) = reports(proc)
    assert any(expected in problem for problem in report["problems"]), report["problems"]


def test_without_go_the_check_fails_with_a_clear_message(tmp_path: Path) -> None:
    # A PATH with the script's few commands and no go.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(SCRIPT), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "go not found" in proc.stderr


def test_without_the_module_proxy_the_build_fails_with_a_clear_message(tmp_path: Path) -> None:
    # A fresh clone's copy of the checker (its own empty .cache), with the proxy turned off.
    grafana = tmp_path / "deploy" / "grafana"
    grafana.mkdir(parents=True)
    shutil.copy2(SCRIPT, grafana / SCRIPT.name)
    shutil.copytree(GRAFANA / "importcheck", grafana / "importcheck")
    proc = subprocess.run(
        [str(grafana / SCRIPT.name), "install"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GOPROXY": "off"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "go build failed" in proc.stderr
    assert "GOPROXY=off" in proc.stderr
    assert not (tmp_path / ".cache" / "grafana" / "importcheck").exists()


def test_the_checker_s_go_source_is_gofmt_clean() -> None:
    gofmt = shutil.which("gofmt")
    assert gofmt, "gofmt not found (it comes with Go)"
    proc = subprocess.run(
        [gofmt, "-l", str(GRAFANA / "importcheck")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", f"not gofmt-formatted: {proc.stdout}"
