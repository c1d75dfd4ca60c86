"""A 4-pair landmark experiment on a local 2-worker Ray runtime gives the in-process run's numbers."""
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-experiments.txt)")

from draggan.experiments.landmarks import LandmarkSettings, run_landmarks  # noqa: E402
from draggan.experiments.pairs import landmark_pairs  # noqa: E402
from draggan.experiments.workbench import BenchSpec, load_bench  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "models" / "toyfaces-64.safetensors").is_file(),
                                reason="models/toyfaces-64.safetensors is not there")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def test_ray_run_equals_the_in_process_run(local_ray):
    bench = load_bench(BenchSpec("toyfaces-64", "cpu", "toy"))
    settings = LandmarkSettings(points=5, max_steps=15)
    pairs = landmark_pairs(bench.G, bench.detector, 4, 5, seed=3, psi=0.7)
    here = run_landmarks(bench, ["draggan"], settings, pairs)
    there = run_landmarks(bench, ["draggan"], settings, pairs, ray="local")
    assert [r["pair"] for r in there.pairs] == [0, 1, 2, 3]
    assert [r["md_after"] for r in there.pairs] == [r["md_after"] for r in here.pairs]
    assert [r["steps"] for r in there.pairs] == [r["steps"] for r in here.pairs]
    for key in ("pairs", "md_before", "md_after", "found_after", "success_rate", "steps"):
        assert there.methods["draggan"][key] == here.methods["draggan"][key], key
    assert here.methods["draggan"]["md_after"] < here.methods["draggan"]["md_before"]
