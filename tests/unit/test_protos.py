"""The generated code in services/faceanalysis/v1 matches the protos."""

from __future__ import annotations

import filecmp
import subprocess
import sys

from tests.support import ROOT


def test_generated_code_is_current(tmp_path):
    protos = sorted((ROOT / "protos").rglob("*.proto"))
    assert len(protos) == 5
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", *map(str, protos)], check=True)
    fresh = tmp_path / "faceanalysis" / "v1"
    committed = ROOT / "services" / "faceanalysis" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    match, mismatch, missing = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not missing, f"stale generated code: {mismatch + missing}; run `make protos`"
    assert len(match) == 15
