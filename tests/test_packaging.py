"""The package's metadata agrees with requirements.txt, and the console script is wired."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirement_lines(path: Path) -> list[str]:
    return [re.sub(r"\s+#.*$", "", line).strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_pyproject_dependencies_are_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == requirement_lines(ROOT / "requirements.txt")
    assert project["optional-dependencies"]["experiments"] == requirement_lines(ROOT / "requirements-experiments.txt")
    assert project["scripts"]["draggan"] == "draggan.__main__:main_exit"


def test_the_command_line_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "draggan", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for name in ("render", "drag", "bench", "invert", "quality", "experiment", "train", "train-auto"):
        assert name in out.stdout


def test_the_spaces_guide_shows_the_readmes_front_matter():
    """docs/spaces.md tells people to put its block at the top of README.md: it is the README's own."""
    front = (ROOT / "README.md").read_text().split("---\n")[1]
    guide = (ROOT / "docs" / "spaces.md").read_text()
    assert f"```yaml\n---\n{front}---\n```" in guide
