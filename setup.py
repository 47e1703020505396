"""The one thing pyproject.toml cannot say: ship the top-level models/ folder as `genretag._models`.

`packages.find` cannot add a package that lives outside `genretag/`, so the package list and the
`package_dir` mapping are given here; everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    # beetsplug: beets' namespace package (no __init__.py), for the beets plugin beetsplug/genretag.py
    packages=[*find_packages(include=["genretag", "genretag.*"]), "genretag._models", "beetsplug"],
    package_dir={"genretag._models": "models"},
)
