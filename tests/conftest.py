"""Shared test set-up. Under .ci/test (PENCHANT_TEST_INSTALLED=1) the tests must import the
installed wheel, never the source tree."""

from __future__ import annotations

import os
from pathlib import Path

import penchant

SOURCE_TREE = Path(__file__).resolve().parent.parent / "python"
DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

if os.environ.get("PENCHANT_TEST_INSTALLED") == "1":
    assert SOURCE_TREE not in Path(penchant.__file__).resolve().parents, (
        f"tests imported penchant from the source tree ({penchant.__file__}), not the installed wheel"
    )
