"""What the README's install gives the app's features (issue 24 item 6): the Experiment tab's decay plot needs
matplotlib, so requirements.txt (the README's install) holds it; the README says to install CPU torch first."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def requirement_names(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {re.split(r"[<>=!~\[ ;]", line)[0].lower() for line in lines if line}


def test_the_decay_plots_package_comes_with_the_readmes_install():
    assert "import matplotlib" in (ROOT / "draggan" / "experiments" / "decay.py").read_text(encoding="utf-8")
    assert "matplotlib" in requirement_names(ROOT / "requirements.txt")


def test_the_readme_says_cpu_torch_before_the_install_that_downloads_cuda():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cpu = readme.index("--index-url https://download.pytorch.org/whl/cpu")
    assert cpu < readme.index("pip install -r requirements.txt"), "the CPU torch tip comes after the install"
