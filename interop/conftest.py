"""What the interoperability tests share: where the repository, its fixtures and the built binary are, the fixture
models (`fixtures/models/fixtures.json`) to parametrize over, and `onnx_dpo(...)`, which runs the binary.

The binary is $ONNX_DPO_BIN (scripts/test sets it to the one `swift build` made), else .build/debug/onnx-dpo.
pytest puts this folder on sys.path (no __init__.py, default import mode), so the test files import these names
with `from conftest import ...`."""
import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
BIN = os.environ.get("ONNX_DPO_BIN", str(ROOT / ".build" / "debug" / "onnx-dpo"))
EXPORTS = json.loads((FIXTURES / "models" / "fixtures.json").read_text())

# Parametrizes a test over every fixture export, named by the export: @each_export def test_x(fixture): ...
each_export = pytest.mark.parametrize("fixture", EXPORTS, ids=[entry["name"] for entry in EXPORTS])


def export_path(name):
    """fixtures/models/<name>/model.onnx: a fixture export by its name in fixtures.json."""
    return FIXTURES / "models" / name / "model.onnx"


def onnx_dpo(*args, check=True, preexec_fn=None):
    """Runs the binary with `args` (str() of each); with `check`, a non-zero exit fails the test with its stderr."""
    result = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, preexec_fn=preexec_fn)
    if check and result.returncode != 0:
        raise AssertionError(f"onnx-dpo {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result
