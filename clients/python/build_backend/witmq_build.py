"""The PEP 517 backend of the witmq package: setuptools' own (setuptools.build_meta), taken from
the setuptools and wheel already installed, so that `pip install clients/python` works with no
package index.

pip builds a package in an isolated environment, into which it downloads the build requirements;
with no index reachable that fails although setuptools is installed. This backend downloads
nothing: when the isolation hides the interpreter's own setuptools (a virtual environment's, or
the system's), it looks in the interpreter's site directories, and for what is still missing
(a virtual environment has no `wheel`) in Debian's system packages (python3-setuptools,
python3-wheel). It asks pip for no requirement it can import.
"""

import importlib.util
import os
import site
import sys

_DEBIAN_PACKAGES = "/usr/lib/python3/dist-packages"


def _importable(name):
    return importlib.util.find_spec(name) is not None


def _append(paths):
    for path in paths:
        if os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)


if not _importable("setuptools"):
    _append(site.getsitepackages())
if not _importable("setuptools") or not _importable("wheel"):
    _append([_DEBIAN_PACKAGES])

from setuptools import build_meta as _meta  # noqa: E402
from setuptools.build_meta import *  # noqa: E402,F401,F403 (the PEP 517 hooks)


def _missing(requirements):
    """The requirements whose module cannot be imported here (their names are module names)."""
    names = [(r, r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip())
             for r in requirements]
    return [r for r, name in names if not _importable(name)]


def get_requires_for_build_wheel(config_settings=None):
    return _missing(_meta.get_requires_for_build_wheel(config_settings))


def get_requires_for_build_sdist(config_settings=None):
    return _missing(_meta.get_requires_for_build_sdist(config_settings))


def get_requires_for_build_editable(config_settings=None):
    return _missing(_meta.get_requires_for_build_editable(config_settings))
