"""Each rule's conda environment holds every third-party package that the code the rule runs imports.

For every rule in workflow/rules/*.smk: its stage (`stage_shell("<subcommand>")`, whose command is
`python -m outcrop <subcommand>`) or its `script:` leads, through the command line and the stage's
declared function (outcrop.stages), to the package modules it imports, transitively; the
third-party imports found there (read with `ast`, nothing imported) must be listed in the rule's
envs/*.yaml under their conda names, with pins that agree with pyproject.toml's lower bounds.
Imports that only run when the module is already loaded (`if "torch" in sys.modules:`) or that are
allowed to fail (`try: ... except ImportError:`) do not count. The reading is per module: a package
module reached counts with all its imports, those inside its functions included.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "workflow" / "outcrop"
RULES = REPO / "workflow" / "rules"
ENVS = REPO / "envs"

# Import name -> conda-forge package name, where they differ.
CONDA_NAME = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "torch": "pytorch",
    "faiss": "faiss-cpu",
    "PIL": "pillow",
    "skimage": "scikit-image",
    "cv2": "opencv",
    "osgeo": "gdal",
    "xstatic": "xstatic-leaflet",
    "pystac_client": "pystac-client",
}
# conda-forge name -> the name pyproject.toml uses, where they differ.
PIP_NAME = {"pytorch": "torch", "pytorch-gpu": "torch", "faiss-gpu": "faiss-cpu"}
# Conda packages that stand in for one another (a GPU build for the CPU one).
ALTERNATIVES = {"pytorch": {"pytorch-gpu"}, "faiss-cpu": {"faiss-gpu"}}


# Exceptions whose handlers let an import fail (ImportError and the classes above it).
IMPORT_FAILURES = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


# --- the rules ------------------------------------------------------------------------------------


def rule_blocks() -> dict[str, str]:
    """Rule name -> its text, for every rule of every rule file."""
    blocks = {}
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        starts = [(m.start(), m.group(1)) for m in re.finditer(r"^(?:rule|checkpoint) (\w+):", text, re.M)]
        for i, (start, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            body = text[start:end]
            first_line = body.index("\n") + 1
            top = re.search(r"^\S", body[first_line:], re.M)  # the rule ends at the next top-level line
            blocks[name] = body[: first_line + top.start()] if top else body
    return blocks


def directive(block: str, name: str) -> str | None:
    found = re.search(rf"^\s+{name}:\s*\n\s+[rf]?[\"']([^\"']+)[\"']", block, re.M)
    return found.group(1) if found else None


def rule_commands(block: str) -> list[str]:
    """The outcrop subcommands a rule runs: `stage_shell("tile")`, or `python -m outcrop tile` written out."""
    found = re.findall(r'python -m outcrop ([a-z][a-z0-9-]*)|stage_shell\("([a-z][a-z0-9-]*)"\)', block)
    return [written or declared for written, declared in found]


# --- imports --------------------------------------------------------------------------------------


def _optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether an import sits in `try/except ImportError` or under `if "x" in sys.modules`."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                if handler.type is None:
                    return True
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if any(isinstance(n, ast.Name) and n.id in IMPORT_FAILURES for n in names):
                    return True
        if isinstance(parent, ast.If) and child in parent.body and "sys.modules" in ast.unparse(parent.test):
            return True
        child, parent = parent, parents.get(parent)
    return False


def imports_in(tree: ast.AST, module: str) -> set[str]:
    """Absolute names of the modules imported anywhere under ``tree`` (optional imports left out)."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _optional(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level] if module.count(".") >= node.level - 1 else []
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module
            found.add(base_name)
            # `from outcrop.raster import scenes` imports a module; `from outcrop import OutcropError` does not.
            found.update(f"{base_name}.{alias.name}" for alias in node.names)
    return found


def module_file(name: str) -> Path | None:
    if name != "outcrop" and not name.startswith("outcrop."):
        return None
    parts = name.split(".")[1:]
    path = PACKAGE.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def third_party(start: set[str]) -> set[str]:
    """Top-level third-party modules imported by ``start`` and, transitively, by package modules."""
    seen, todo, outside = set(), list(start), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is not None:
            todo.extend(imports_in(ast.parse(path.read_text()), name))
            if name != "outcrop":
                todo.append(name.rsplit(".", 1)[0])  # importing outcrop.x runs outcrop/__init__.py
            continue
        top = name.split(".")[0]
        if top != "outcrop" and top not in sys.stdlib_module_names and top != "__future__":
            outside.add(top)
    return outside


def cli_imports() -> dict[str, set[str]]:
    """outcrop subcommand -> modules imported on its way: the command line's module-level imports, the
    functions that run a stage, and the module of the stage's declared function."""
    from outcrop.stages import STAGES

    tree = ast.parse((PACKAGE / "cli.py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    module_level = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module_level |= imports_in(node, "outcrop.cli")
    assert "_runner" in functions, "outcrop/cli.py runs stages through _runner"
    running = imports_in(functions["_runner"], "outcrop.cli") | imports_in(functions["main"], "outcrop.cli")
    return {name: module_level | running | {stage.function.partition(":")[0]} for name, stage in STAGES.items()}


# --- environments ---------------------------------------------------------------------------------


def env_packages(path: Path) -> dict[str, str | None]:
    """conda package -> pinned version (None when unpinned) of an environment file."""
    spec = yaml.safe_load(path.read_text())
    packages = {}
    deps = []
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):  # the pip: section; options (--no-deps -e ..) are not packages
            deps += [item for item in dep.get("pip", []) if not item.startswith("-")]
        else:
            deps.append(dep)
    for dep in deps:
        name, _, version = re.match(r"([A-Za-z0-9_.-]+)\s*(=+|>=)?\s*([^\s=]*)", dep).groups()
        packages[name.lower()] = version or None
    return packages


def pyproject_lower_bounds() -> dict[str, Version]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bounds = {}
    for line in project["dependencies"]:
        req = Requirement(line)
        for spec in req.specifier:
            if spec.operator in (">=", "==", "~="):
                bounds[req.name.lower()] = Version(spec.version)
    bounds["python"] = Version(re.search(r">=\s*([\d.]+)", project["requires-python"]).group(1))
    return bounds


BLOCKS = rule_blocks()
CONDA_RULES = sorted(name for name, block in BLOCKS.items() if directive(block, "conda"))


def test_every_rule_that_runs_something_names_an_environment():
    runs = {name for name, block in BLOCKS.items() if re.search(r"^\s+(shell|script|run):", block, re.M)}
    assert runs, "no rules found"
    assert sorted(runs - set(CONDA_RULES)) == []


@pytest.mark.parametrize("rule", CONDA_RULES)
def test_environment_holds_what_the_rule_imports(rule):
    block = BLOCKS[rule]
    env_path = (RULES / directive(block, "conda")).resolve()
    assert env_path.is_file(), f"{rule}: {env_path} missing"
    commands = cli_imports()
    start: set[str] = set()
    for command in rule_commands(block):
        assert command in commands, f"{rule}: `outcrop {command}` is not a stage"
        start |= commands[command]
    script = directive(block, "script")
    if script:
        path = (RULES / script).resolve()
        start |= imports_in(ast.parse(path.read_text()), "__main__")
    shell = block.split("shell:", 1)[-1] if "shell:" in block else ""
    if not start and shell and not re.search(r"\b(python|outcrop|Rscript|java)\b", shell):
        return  # a plain shell utility (`printf` of analogues_skipped): it imports nothing
    assert start, f"{rule}: runs neither an outcrop subcommand nor a script"
    have = set(env_packages(env_path))
    needed = {CONDA_NAME.get(module, module).lower() for module in third_party(start)}
    missing = sorted(p for p in needed if p not in have and not ALTERNATIVES.get(p, set()) & have)
    assert missing == [], f"{rule}: {env_path.name} lacks {missing}"


@pytest.mark.parametrize("env", sorted(ENVS.glob("*.yaml")), ids=lambda p: p.name)
def test_environment_pins_agree_with_pyproject(env):
    bounds = pyproject_lower_bounds()
    packages = env_packages(env)
    assert "python" in packages and "pip" in packages, f"{env.name}: python and pip (for the package)"
    unpinned = sorted(name for name, version in packages.items() if version is None and name != "pip")
    assert unpinned == [], f"{env.name}: unpinned {unpinned}"
    for name, version in packages.items():
        bound = bounds.get(PIP_NAME.get(name, name))
        if version and bound is not None:
            assert Version(version) >= Version(f"{bound.major}.{bound.minor}"), (
                f"{env.name}: {name}={version} is below pyproject's {name} >= {bound}"
            )


def test_every_environment_is_used():
    used = {(RULES / directive(BLOCKS[rule], "conda")).resolve() for rule in CONDA_RULES}
    assert sorted(p.name for p in ENVS.glob("*.yaml") if p.resolve() not in used) == []


def test_import_reading_sees_through_the_cli():
    """The import reader finds what it must: training needs torch, tiling does not."""
    commands = cli_imports()
    assert "torch" in third_party(commands["train"])
    assert "faiss" in third_party(commands["index"])
    assert "torch" not in third_party(commands["tile"])
    assert "faiss" not in third_party(commands["prepare"])


# --- deployment (`--sdm conda`) -------------------------------------------------------------------


def _local_paths(spec: dict) -> list[str]:
    """Entries of an environment that name a path on disk (`-e ..`, `./pkg`, `file:`), which break
    once Snakemake copies the file under .snakemake/conda/ and resolves them from there."""
    items = [d for d in spec["dependencies"] if isinstance(d, str)]
    items += [p for d in spec["dependencies"] if isinstance(d, dict) for p in d.get("pip", [])]
    return [i for i in items if re.search(r"(^|\s)(-e|--editable)(\s|$)|(^|\s)\.{1,2}(/|\s|$)|file:|^/", i)]


@pytest.mark.parametrize("env", sorted(ENVS.glob("*.yaml")), ids=lambda p: p.name)
def test_environment_deployed_elsewhere_names_no_local_path(env, tmp_path):
    deployed = tmp_path / ".snakemake" / "conda" / "0123abcd.yaml"  # where Snakemake copies it
    deployed.parent.mkdir(parents=True)
    deployed.write_text(env.read_text())
    assert _local_paths(yaml.safe_load(deployed.read_text())) == []


def test_local_path_reader_sees_an_editable_install():
    assert _local_paths({"dependencies": ["python=3.11", {"pip": ["--no-deps -e .."]}]}) == ["--no-deps -e .."]


def test_every_rule_stage_starts_from_a_foreign_folder_with_the_workflow_on_pythonpath(tmp_path):
    """What a job does: `python -m outcrop <stage>` with PYTHONPATH=<repo>/workflow, from any folder,
    runs this repository's package (no console script, no installed copy needed)."""
    import os
    import subprocess

    commands = sorted({c for block in BLOCKS.values() for c in rule_commands(block)})
    assert len(commands) >= 15, commands
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(REPO / "workflow")}
    where = subprocess.run(
        [sys.executable, "-c", "import outcrop; print(outcrop.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where) == PACKAGE / "__init__.py"
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "outcrop", command, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0 and f"usage: outcrop {command}" in done.stdout, (command, done.stderr)


def test_the_workflow_puts_its_package_on_every_jobs_pythonpath():
    common = (RULES / "common.smk").read_text()
    assert re.search(r"^os\.environ\.update\(\s*PYTHONPATH=", common, re.M)
    assert re.search(r'PACKAGE_ROOT = str\(Path\(workflow\.basedir\)\.resolve\(\) / "workflow"\)', common)
