"""The ```python blocks of clients/python/README.md (whole programs; ```py marks fragments) run as
written, against a real witmqd in place of the 127.0.0.1:7400 they name."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import PACKAGE_ROOT

with open(os.path.join(PACKAGE_ROOT, "README.md")) as f:
    BLOCKS = re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(daemon, index):
    code = BLOCKS[index].replace("127.0.0.1:7400", daemon.address)
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, "block %d:\n%s\n%s" % (index, code, result.stderr)
