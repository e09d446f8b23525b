"""dvc.yaml's code deps cover every module a stage runs, so `dvc repro` never serves results of old code.

Each stage's module is followed through its imports within the package (function-level imports too) and
every file reached must lie under one of the stage's deps. Package __init__ files that hold only a docstring
and constants (siamdetr's __version__) are left out: they cannot change what a stage computes.
"""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "siamdetr"

# dvc.yaml stage -> the module that runs it (what its `siamdetr ...` command calls)
STAGE_MODULES = {
    "data": ["siamdetr.stages.data"],
    "backbone": ["siamdetr.stages.backbone"],
    "proposals": ["siamdetr.stages.proposals"],
    "pretrain": ["siamdetr.stages.pretrain", "siamdetr.grid"],  # --stage NAME is resolved by the grid
    "finetune": ["siamdetr.stages.finetune", "siamdetr.grid"],
    "report": ["siamdetr.stages.report"],
    "sweep": ["siamdetr.stages.sweep"],
}


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(file: Path, name: str) -> set[str]:
    """Names of the package's modules `file` imports (absolute or relative, at any depth of the code)."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
    return {m for m in found if m.split(".")[0] == "siamdetr" and module_file(m)}


def closure(entries: list[str]) -> set[Path]:
    """Every file the entry modules run: their imports, transitively, and the packages that hold them."""
    todo, seen = list(entries), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        todo += sorted(imported_modules(module_file(name), name))
    return {module_file(m) for m in seen}


def has_code(file: Path) -> bool:
    """Anything beyond a docstring and constant assignments."""
    constant = (ast.Expr, ast.Assign, ast.AnnAssign)
    return any(
        not (isinstance(s, constant) and isinstance(s.value, ast.Constant)) for s in ast.parse(file.read_text()).body
    )


def stages() -> list[tuple[str, str, list[str]]]:
    out = []
    for pipeline in (ROOT / "dvc.yaml", ROOT / "sweeps" / "dvc.yaml"):
        for stage, spec in yaml.safe_load(pipeline.read_text())["stages"].items():
            body = spec.get("do", spec)
            deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
            out.append((pipeline.relative_to(ROOT).as_posix(), stage, deps))
    return out


def test_every_stage_has_a_known_module():
    assert {stage for _, stage, _ in stages()} == set(STAGE_MODULES)


@pytest.mark.parametrize(("pipeline", "stage", "deps"), stages(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_stages_deps_cover_every_module_it_imports(pipeline, stage, deps):
    covered = [ROOT / d.split("#")[0].strip() for d in deps]
    files = {f for f in closure(STAGE_MODULES[stage]) if f.name != "__init__.py" or has_code(f)}
    missing = sorted(
        f.relative_to(ROOT).as_posix() for f in files if not any(f == c or c in f.parents for c in covered)
    )
    assert not missing, f"{pipeline} stage {stage!r} runs modules its deps do not list: {missing}"


def test_the_import_walk_sees_function_level_and_relative_imports(tmp_path):
    files = closure(["siamdetr.stages.pretrain"])
    # the stage imports the coverage check inside run(); pretrain/data.py reaches pretrain/base.py
    assert PACKAGE / "proposals" / "coverage.py" in files and PACKAGE / "pretrain" / "base.py" in files
    assert PACKAGE / "stages" / "report.py" not in files
