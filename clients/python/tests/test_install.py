"""`pip install clients/python` works with no package index: in a fresh virtual environment, from a
copy of the package (so that the build leaves nothing in the source tree)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import PACKAGE_ROOT


def test_pip_installs_the_package_offline(tmp_path):
    source = tmp_path / "python"
    shutil.copytree(PACKAGE_ROOT, source,
                    ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS="", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", str(source)], env=env,
                         capture_output=True, text=True, timeout=240)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.resources, witmq, witmq.sync; "
         "print(witmq.__version__, witmq.__file__, "
         "importlib.resources.files('witmq').joinpath('py.typed').is_file())"],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    version, path, typed = check.stdout.split()
    assert version == "0.1.0" and path.startswith(str(venv)) and typed == "True"
