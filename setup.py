"""Build script. Metadata lives in pyproject.toml; this file exists so that compiled CPU kernels from
``csrc/`` can be added as a torch C++ extension later without changing how the package is installed."""

from setuptools import setup

setup()
