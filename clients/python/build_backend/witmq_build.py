"""The PEP 517 backend of the witmq package: setuptools' own (setuptools.build_meta), taken from
the setuptools and wheel already installed (Debian's python3-setuptools and python3-wheel).

pip builds a package in an isolated environment into which it downloads the build requirements
from a package index; with no index reachable that fails, although setuptools is installed. This
backend needs nothing downloaded: when the isolated environment hides the installed setuptools,
it looks in Debian's system packages, and it asks pip for no requirement it can already import.
So `pip install clients/python` works offline.
"""

import importlib.util
import sys

_DEBIAN_PACKAGES = "/usr/lib/python3/dist-packages"

try:
    from setuptools import build_meta as _meta
except ImportError:
    sys.path.append(_DEBIAN_PACKAGES)
    from setuptools import build_meta as _meta

from setuptools.build_meta import *  # noqa: E402,F401,F403 (the PEP 517 hooks)


def _missing(requirements):
    """The requirements whose module cannot be imported here (their names are module names)."""
    return [r for r in requirements if importlib.util.find_spec(r.split("<")[0].split(">")[0]
                                                              .split("=")[0].strip()) is None]


def get_requires_for_build_wheel(config_settings=None):
    return _missing(_meta.get_requires_for_build_wheel(config_settings))


def get_requires_for_build_sdist(config_settings=None):
    return _missing(_meta.get_requires_for_build_sdist(config_settings))


def get_requires_for_build_editable(config_settings=None):
    return _missing(_meta.get_requires_for_build_editable(config_settings))
