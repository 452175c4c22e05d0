"""The examples in the public API's docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "vtrial.model.spec",
        "vtrial.infra.rng",
        "vtrial.engine.api",
        "vtrial.engine.records",
        "vtrial.data.records",
        "vtrial.trial.recist",
        "vtrial.trial.adverse",
        "vtrial.protocol.dosing",
        "vtrial.infra.progress",
        "vtrial.report.pages",
        "vtrial.report.plots",
        "vtrial.model.expressions",
        "vtrial.analysis.stats",
        "vtrial.study.config",
        "vtrial.population.sampling",
        "vtrial.population.distributions",
        "vtrial.model.residual",
        "vtrial.model.units",
        "vtrial.protocol.arms",
        "vtrial.protocol.rules",
        "vtrial.engine.grid",
        "vtrial.run.cli",
        "vtrial.data.dataset",
        "vtrial.infra.yamlsafe",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_readme_model_files_load() -> None:
    """Every model file shown in the README is a valid model (same form as the library)."""
    import re
    from pathlib import Path

    from vtrial.infra.yamlsafe import load_yaml
    from vtrial.model.spec import spec_from_dict

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [load_yaml(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    models = [b for b in blocks if isinstance(b, dict) and {"name", "parameters"} <= set(b)]
    assert len(models) >= 2
    for data in models:
        spec = spec_from_dict(data, source="README.md")
        assert spec.outputs


def test_readme_images_exist() -> None:
    """Every image the README shows is in the repository."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (root / "README.md").read_text())
    assert len(images) >= 1
    for image in images:
        assert (root / image).is_file(), image


def test_public_api_is_lazy_and_complete() -> None:
    """``import vtrial`` loads no heavy dependency; every name of ``__all__`` resolves."""
    import subprocess
    import sys

    code = (
        "import sys, vtrial; heavy = [m for m in ('numba', 'pandas', 'scipy', 'dask') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    import vtrial

    assert sorted(vtrial.__all__) == sorted([*vtrial._EXPORTS, "__version__"])
    for name in vtrial.__all__:
        assert getattr(vtrial, name) is not None


def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python block of the README that needs no finished run runs as written,
    from a folder holding only the repository's ``config/`` (the studies the README
    names; one block needed a model file that is not in the repository)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "results/" not in b]
    assert blocks
    (tmp_path / "config").symlink_to(Path(__file__).resolve().parents[1] / "config")
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
