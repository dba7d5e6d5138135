"""The one way tests and tools find reference data (upstream schemas and CRDs, pinned by sha256).

    from reference import reference_dir
    schema = reference_dir("argo-v4.1.2") / "schema.json"

``reference_dir(set)`` is ``../shared/<set>`` beside the clone ($CONTRIBFLOW_SHARED_DIR) when present,
else ``.reference/<set>`` that `make reference-data` fills ($CONTRIBFLOW_REFERENCE_DIR); neither raises
FileNotFoundError telling to run `make reference-data`. The list of files, their upstream and their
sha256 are in scripts/reference_data.py, which this module loads (scripts/ is not a package).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reference_data.py"


def _load():
    if "reference_data" not in sys.modules:
        spec = importlib.util.spec_from_file_location("reference_data", SCRIPT)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["reference_data"] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules["reference_data"]


reference_data = _load()
REFERENCE = reference_data.REFERENCE
SETS = reference_data.SETS
reference_dir = reference_data.reference_dir
shared_dir = reference_data.shared_dir
local_dir = reference_data.local_dir
