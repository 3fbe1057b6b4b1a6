"""Packaging and test configuration: pyproject.toml, pytest.ini's warning filters, the FreeNoise fence."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_installs_the_package_with_the_aas_command_and_the_pinned_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["aas"] == "aas_core.cli:main"
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in pins)
    assert {"scipy", "pandas", "filelock"} <= {line.split("==")[0].lower() for line in pins}


def test_a_deprecated_free_noise_helper_fails_the_tests_other_deprecations_stay_quiet():
    with pytest.raises(FutureWarning, match="_disable_free_noise_in_block"):
        warnings.warn("`_disable_free_noise_in_block` is deprecated and will be removed", FutureWarning, stacklevel=1)
    with warnings.catch_warnings(record=True):
        warnings.warn("some other library API is deprecated", DeprecationWarning, stacklevel=1)


def test_private_free_noise_calls_are_fenced_to_the_checked_diffusers():
    from importlib.metadata import version

    from aas_core.generate import run

    assert run._PRIVATE_FREE_NOISE == version("diffusers").startswith("0.42.")


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_aas_core_makes_idle_openmp_threads_sleep_unless_told_otherwise(given, expected):
    """Spinning OpenMP threads took the library reader's core (README, indexing figures); an explicit setting wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | ({"OMP_WAIT_POLICY": given} if given else {})
    code = "import os, aas_core, torch; print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads() > 0)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == [expected, "True"]
