"""The package's shape, held: short functions, no modules that import each other, short backbone files.

The measures are ``scripts/structure.py``'s (run it for the full report).
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("structure", ROOT / "scripts" / "structure.py")
structure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(structure)

#: the backbone files' lengths before the lockstep engine (issue 16): each is held to at most half
LINES_BEFORE_ENGINE = {"dm": 235, "dc": 447, "idc": 262, "cafe": 546}


def test_no_function_is_longer_than_60_lines_of_code():
    long = [f"{name} ({n})" for n, name in structure.function_lengths() if n > 60]
    assert not long, long


def test_no_two_modules_import_each_other_and_no_import_cycles():
    graph = structure.imports()
    assert structure.mutual_imports(graph) == []
    assert structure.cycles(graph) == []


def test_the_import_scan_sees_lazy_imports(tmp_path):
    pkg = tmp_path / structure.PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    graph = structure.imports(tmp_path)
    assert structure.mutual_imports(graph) == [(f"{structure.PACKAGE}.a", f"{structure.PACKAGE}.b")]


@pytest.mark.parametrize("backbone", sorted(LINES_BEFORE_ENGINE))
def test_each_backbone_file_is_at_most_half_its_length_before_the_engine(backbone):
    lines = len((ROOT / "src" / "fairdistill" / "backbones" / f"{backbone}.py").read_text().splitlines())
    assert lines <= LINES_BEFORE_ENGINE[backbone] // 2, lines
