"""Which folder each stage package is imported from: the import path alone decides whether a run uses the
student's code, a submission's, or the reference in ``solutions/`` (see ``tests/conftest.py``)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
from pathlib import Path


class StagePackageFinder(importlib.abc.MetaPathFinder):
    """Finds each stage package in the folder chosen for it, ahead of everything on ``sys.path``."""

    def __init__(self, homes: dict[str, Path]):
        self.homes = homes

    def find_spec(self, name, path=None, target=None):
        if name == "solutions":  # code under test may not borrow the reference by importing it
            raise ModuleNotFoundError("the solutions/ folder cannot be imported by the code under test", name=name)
        home = self.homes.get(name)
        if home is None:
            return None  # not a stage package (submodules are found through their package)
        spec = importlib.machinery.PathFinder.find_spec(name, [str(home)])
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r}: there is no {name}/ folder in {home}", name=name)
        return spec
