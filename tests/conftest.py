import json
import os
import sys
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


@pytest.fixture(autouse=True)
def no_drag_outlives_its_test():
    """After each test, stop and finish every drag still in a line, even one a failed test left suspended (its
    traceback, kept by pytest, holds the drag's iterator): torn down at the interpreter's exit instead, mid-step,
    it aborted the whole run (exit 134, not 1). A drag that will not end fails the test here."""
    yield
    scheduling = sys.modules.get("draggan.scheduling")
    if scheduling is not None:
        assert scheduling.DragLine.end_all(timeout=60), "a drag was still running 60 s after its test ended"


def require_reference(path: Path = REFERENCE, ci: str | None = None) -> Path:
    """`path` if the parity data is there; else skip the test, or fail it when CI is set (a CI run that lost
    ../shared/reference must not pass without its parity tests)."""
    if not (path / "sg2_res128.safetensors").exists():
        ci = os.environ.get("CI", "") if ci is None else ci
        if ci.lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but the parity data is missing: {path} (the reference tests must run in CI)")
        pytest.skip("../shared/reference is not beside the repo")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return require_reference()


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
