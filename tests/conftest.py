import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REFERENCE = ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests use tiny networks: one thread is faster for them, and far faster than two contending ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "sg2_res128.safetensors").exists():
        if os.environ.get("CI") == "true":  # in CI the parity tests must run, not skip
            pytest.fail("../shared/reference is not beside the repo (CI=true: reference tests fail rather than skip)")
        pytest.skip("../shared/reference is not beside the repo")
    return REFERENCE


@pytest.fixture(scope="module")
def extra_catalog(tmp_path_factory):
    """A function that adds model entries (dicts as in catalog.json) to the catalog for the module's tests."""
    from stylegan2 import catalog

    patch = pytest.MonkeyPatch()

    def add(*entries: dict) -> None:
        data = json.loads(catalog.CATALOG_PATH.read_text(encoding="utf-8"))
        data["models"] += list(entries)
        path = tmp_path_factory.mktemp("catalog") / "catalog.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        patch.setattr(catalog, "CATALOG_PATH", path)
        catalog._read_catalog.cache_clear()

    yield add
    patch.undo()
    catalog._read_catalog.cache_clear()
