"""Atomic outputs: every file the package writes appears whole or not at all.

A scan of the package source catches a new writer that bypasses :func:`outcrop.io.atomic_path`
(a killed job would leave a file that looks finished, and Snakemake would trust it); the behaviour
tests show what the helper guarantees: nothing on failure, nothing on SIGKILL, no pile of
temporaries from killed writers once the file is written again.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from outcrop.io import atomic_path, load_npy, save_npy

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "outcrop"
# Methods and functions that write a file named by one of their arguments.
WRITERS = {
    "to_file",
    "to_parquet",
    "to_csv",
    "to_json",
    "to_feather",
    "to_excel",
    "tofile",
    "savefig",
    "write_text",
    "write_bytes",
    "write_index",
    "open_memmap",
    "rio_copy",
    "imsave",
    "write_html",
}
# Writers only with two arguments (a destination after the source or object).
TWO_PATHS = {"dump", "copy", "copyfile", "copy2", "copytree", "move"}
# np.save, torch.save and friends; a method ``x.save`` of the package's own objects is checked where it is defined.
SAVES = {"save", "savez", "savez_compressed", "savetxt"}
# Writers whose receiver alone makes them harmless (writing to a string or to an open buffer).
IN_MEMORY = {"BytesIO", "StringIO"}
WRITE_MODES = set("wax+")


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_open_for_writing(call: ast.Call) -> bool:
    """``open(p, "w")``, ``rasterio.open(p, "w", ...)``, ``p.open("wb")``: a literal write mode."""
    if _call_name(call) != "open":
        return False
    modes = [a for a in call.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    modes += [k.value for k in call.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
    return any(isinstance(m, ast.Constant) and set(str(m.value)) & WRITE_MODES for m in modes)


def _is_write(call: ast.Call) -> bool:
    name = _call_name(call)
    if name in TWO_PATHS:
        return len(call.args) >= 2  # json.dump(obj, fh), shutil.copy(a, b); array.copy() writes nothing
    if name in SAVES:
        owner = call.func.value if isinstance(call.func, ast.Attribute) else None
        return isinstance(owner, ast.Name) and owner.id in {"np", "numpy", "torch"}
    return name in WRITERS or _is_open_for_writing(call)


class _WriteVisitor(ast.NodeVisitor):
    """Collects writes whose target is neither an ``atomic_path`` temporary nor an in-memory buffer."""

    def __init__(self) -> None:
        self.atomic: list[set[str]] = []  # names bound by enclosing ``with atomic_path(...) as x``
        self.buffers: set[str] = set()
        self.bad: list[tuple[int, str]] = []

    def visit_Assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call) and _call_name(node.value) in IN_MEMORY:
            self.buffers |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        self.generic_visit(node)

    def visit_With(self, node: ast.With) -> None:
        bound = {
            item.optional_vars.id
            for item in node.items
            if isinstance(item.context_expr, ast.Call)
            and _call_name(item.context_expr) == "atomic_path"
            and isinstance(item.optional_vars, ast.Name)
        }
        self.atomic.append(bound)
        self.generic_visit(node)
        self.atomic.pop()

    def visit_Call(self, node: ast.Call) -> None:
        if _is_write(node):
            used = set().union(*(_names_in(a) for a in [*node.args, *(k.value for k in node.keywords)]))
            if isinstance(node.func, ast.Attribute):
                used |= _names_in(node.func.value)  # tmp.write_text(...), buf.write(...)
            temporaries = set().union(*self.atomic) if self.atomic else set()
            if not used & (temporaries | self.buffers):
                self.bad.append((node.lineno, ast.unparse(node)[:120]))
        self.generic_visit(node)


def direct_writes(source: str) -> list[tuple[int, str]]:
    """(line, call) of every write in ``source`` that bypasses ``atomic_path``."""
    visitor = _WriteVisitor()
    visitor.visit(ast.parse(source))
    return visitor.bad


def test_the_scan_sees_direct_writes():
    """The scan must flag what it is meant to catch, or its silence below proves nothing."""
    bad = direct_writes(
        "import numpy as np, torch, rasterio\n"
        "def f(path, table, fig, model, arr):\n"
        "    np.save(path, arr)\n"
        "    table.to_parquet(path)\n"
        "    fig.savefig(path)\n"
        "    torch.save(model, path)\n"
        "    with open(path, 'w') as fh:\n"
        "        fh.write('x')\n"
        "    with rasterio.open(path, 'w', driver='GTiff') as dst:\n"
        "        pass\n"
        "    with atomic_path(path) as tmp:\n"
        "        table.to_csv(path)\n"  # inside the block but not on its temporary
    )
    assert [line for line, _ in bad] == [3, 4, 5, 6, 7, 9, 12]
    assert (
        direct_writes(
            "import io\n"
            "def g(path, table, fig):\n"
            "    with atomic_path(path) as tmp:\n"
            "        table.to_file(tmp, driver='GPKG')\n"
            "    buf = io.BytesIO()\n"
            "    fig.savefig(buf, format='png')\n"
            "    with open(path) as fh:\n"
            "        fh.read()\n"
        )
        == []
    )


@pytest.mark.parametrize(
    "module", sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "io.py")
)
def test_no_module_writes_around_atomic_path(module):
    bad = direct_writes((PACKAGE / module).read_text())
    assert bad == [], f"{module} writes without outcrop.io.atomic_path: {bad}"


def test_no_pickle_of_user_files():
    """Arrays load with allow_pickle=False, torch files with weights_only=True, and pickle is never used."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                assert not {"pickle", "dill", "joblib", "cloudpickle"} & set(filter(None, names)), path.name
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = ast.unparse(node.func.value)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if (owner, node.func.attr) in {("np", "load"), ("numpy", "load")}:
                assert keywords.get("allow_pickle") == "False", f"{path.name}:{node.lineno}"
            if (owner, node.func.attr) == ("torch", "load"):
                assert keywords.get("weights_only") == "True", f"{path.name}:{node.lineno}"
            if node.func.attr in {"read_pickle", "load_state"}:
                pytest.fail(f"{path.name}:{node.lineno}: {ast.unparse(node)}")


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "a.npy"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_killed_writer_leaves_no_final_file_and_the_next_write_sweeps_its_temporary(tmp_path):
    target = tmp_path / "big.npy"
    writer = (
        "import sys, time\n"
        "from outcrop.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    with open(tmp, 'wb') as fh:\n"
        "        fh.write(b'x' * 1000)\n"
        "        fh.flush()\n"
        "        print('writing', flush=True)\n"
        "        time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    left = [p.name for p in tmp_path.iterdir()]
    assert not target.exists() and len(left) == 1 and left[0].startswith(".big.") and left[0].endswith(".tmp.npy")
    (tmp_path / ".big.0123abcd.tmp.npy.stage.tif").write_bytes(b"a staging file of a killed writer")
    (tmp_path / ".bigger.0123abcd.tmp.npy").write_bytes(b"another file's temporary: kept")
    save_npy(target, np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bigger.0123abcd.tmp.npy", "big.npy"]
    assert load_npy(target).tolist() == [0, 1, 2, 3, 4]


def test_a_reader_never_sees_a_partial_file(tmp_path):
    """Repeated rewrites of one array while another process polls it: every read is complete."""
    target = tmp_path / "a.npy"
    save_npy(target, np.zeros(200_000))
    reader = (
        "import sys, time, numpy as np\n"
        "end = time.monotonic() + 3\n"
        "while time.monotonic() < end:\n"
        "    a = np.load(sys.argv[1], allow_pickle=False)\n"
        "    assert a.shape == (200_000,) and len(set(a[::20_000].tolist())) == 1, a[::20_000]\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", reader, str(target)], stderr=subprocess.PIPE, text=True)
    value = 0
    while proc.poll() is None:
        value += 1
        save_npy(target, np.full(200_000, float(value)))
        time.sleep(0.001)
    assert proc.returncode == 0, proc.stderr.read()
    assert value > 5
