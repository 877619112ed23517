"""Every size limit of a run, in one place: what a value from a sheet, a file or the command line
may claim before the package refuses it, each with the setting that raises it.

Why one module: a limit spread over the stages is a limit nobody can find when a real run meets it.
The defaults are far above any real coast (a national mineral-occurrence database, a coastline
digitised at full resolution, thousands of scenes), and far below what would exhaust a machine
or leave a job running for hours without saying why.

Settable limits (:data:`LIMITS`) come from the config's ``limits:`` section. The Snakefile puts
them in the environment (:data:`ENV`) before any job starts, so every job and every command run by
hand reads the same values; a limit never changes a result, only whether a job runs, so raising
one reruns nothing that finished. File-system limits (:data:`NAME_MAX`, :data:`PATH_MAX`) are the
kernel's and not settable.

Only the standard library is imported at module level: the workflow's scheduler checks the scene
sheet with it.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from outcrop.errors import OutcropError

NAME_MAX = 255  # bytes in one file-name component (ext4, XFS, tmpfs, NFS, Lustre, GPFS)
PATH_MAX = 4096  # bytes in a whole path, its terminating NUL included (Linux)
ENV = "OUTCROP_LIMITS"  # JSON object {limit: value} that the Snakefile exports to every job

# A scene id becomes a file name (``prepared/{scene}.tif``): the schema's pattern, here for the
# ids read back from a run's own files, which may have been edited by hand.
SCENE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SCENE_ID_PATTERN = f"^{SCENE_ID.pattern}$"
# Snakemake refuses a wildcard value whose end repeats one substring this many times, taking it
# for an endless recursion of rules (snakemake.io.PeriodicityDetector).
SNAKEMAKE_PERIODIC_REPEATS = 20


@dataclass(frozen=True)
class Limit:
    """One settable limit: its default and what it counts."""

    default: int
    counts: str


LIMITS: dict[str, Limit] = {
    "sheet_rows": Limit(20_000, "scene sheet rows (scenes of one run)"),
    "deposits": Limit(100_000, "features of a deposits or negatives file"),
    "deposit_vertices": Limit(10_000_000, "vertices of all the polygons and lines of a deposits or negatives file"),
    "aoi_vertices": Limit(20_000_000, "vertices of an AOI or coastline file"),
    "scene_pixels": Limit(2_000_000_000, "pixels a scene covers on the run grid"),
}

# Fixed bounds on work, not settable: past them the work stops and says so.
STAC_PAGES = 1_000  # pages of one STAC search followed through their next links (outcrop stac-search)
# floats of raw-pixel features the quality stage scores; past it that baseline is left out
RAW_PIXEL_FLOATS = 50_000_000
# Keys, list items and values of a config, YAML aliases expanded (outcrop.config.validate_config).
# A run's config holds a few hundred. YAML aliases let a file of a few lines stand for billions (an
# "alias bomb": nine aliases each repeating the one before nine times); Snakemake keeps them as
# shared references, but every walk over the config (reading text as numbers, finding NaN, the JSON
# Schema) visits each repetition, and the job-graph build would hang for hours. Not settable: it
# guards the reading of the config whose ``limits:`` section the settings come from.
CONFIG_VALUES = 100_000


def limit(name: str) -> int:
    """The value of the settable limit ``name``: from :data:`ENV` when set there, else its default."""
    if name not in LIMITS:
        raise KeyError(name)
    return _from_environment(os.environ.get(ENV, "")).get(name, LIMITS[name].default)


def _from_environment(text: str) -> dict[str, int]:
    if not text.strip():
        return {}
    try:
        values = json.loads(text)
    except ValueError:
        raise OutcropError(f"{ENV}: not a JSON object of limits ({text[:80]!r})") from None
    if not isinstance(values, dict):
        raise OutcropError(f"{ENV}: not a JSON object of limits ({text[:80]!r})")
    for key, value in values.items():
        if key not in LIMITS:
            raise OutcropError(f"{ENV}: unknown limit {key!r} (known: {', '.join(LIMITS)})")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OutcropError(f"{ENV}: {key}: {value!r} is not a positive integer")
    return values


def export_limits(values: Mapping[str, int]) -> None:
    """Put the config's ``limits`` in the environment, where every job started from here reads them."""
    os.environ[ENV] = json.dumps({k: int(v) for k, v in sorted(values.items())})


def setting(name: str) -> str:
    """How a message names a limit: its config key, and how to set it outside the workflow."""
    return f"limits.{name} in the config (or {ENV}='{{\"{name}\": N}}' for a command run by hand)"


def refuse_above(name: str, count: int, where: str, what: str, *, at_least: bool = False) -> None:
    """Raise one error naming ``where`` and the setting when ``count`` (of ``what``) passes the limit
    ``name``; ``at_least`` when counting stopped at the first one too many."""
    most = limit(name)
    if count > most:
        counted = f"more than {most:,}" if at_least else f"{count:,}"
        raise OutcropError(
            f"{where}: {counted} {what}, and {setting(name)} allows at most {most:,}; "
            "check the file, or raise the limit"
        )


# --- file names and paths ---------------------------------------------------------------------------


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a path on this system (too long as a whole or in one component), or None."""
    size = len(os.fsencode(path))
    if size >= PATH_MAX:
        return f"a path of {size:,} bytes; a path may have at most {PATH_MAX - 1}"
    longest = max((len(part) for part in os.fsencode(path).split(b"/")), default=0)
    if longest > NAME_MAX:
        return f"a file or folder name of {longest:,} bytes in it; a name may have at most {NAME_MAX}"
    return None


def check_path(path: str | os.PathLike[str], where: str) -> None:
    """Refuse, in one line naming ``where``, a path that no system call would accept."""
    problem = path_problem(os.fspath(path))
    if problem is not None:
        raise OutcropError(f"{where}: {_shown(os.fspath(path))}: {problem}")


def _shown(text: str, most: int = 60) -> str:
    """A long value shortened for a one-line message: its start, its length and its end."""
    return repr(text) if len(text) <= most else repr(f"{text[:40]}…{text[-12:]}")


@functools.cache
def scene_name_overhead() -> int:
    """Bytes that the longest file name of a scene adds to its id: a temporary of an atomic write
    (``.{scene}.1a2b3c4d.tmp.tif``) staging a COG (``….stage.tif``) beside the layout's longest
    per-scene name, measured on the layout and on :func:`outcrop.layout.temporary_names` themselves."""
    from outcrop.layout import Layout, temporary_names

    probe = "x"
    names = [
        name
        for path in Layout("r").scene_paths(probe)
        for name in (os.path.basename(path), *temporary_names(os.path.basename(path)))
    ]
    return max(len(name.encode()) for name in names) - len(probe)


def scene_id_bytes() -> int:
    """The longest scene id whose every file name fits in :data:`NAME_MAX`."""
    return NAME_MAX - scene_name_overhead()


def periodic_end(value: str) -> tuple[str, int] | None:
    """The substring that ``value`` ends with :data:`SNAKEMAKE_PERIODIC_REPEATS` or more times in a
    row, and how many times, or None (Snakemake's PeriodicWildcardError, said before it happens)."""
    n = SNAKEMAKE_PERIODIC_REPEATS
    for size in range(1, len(value) // n + 1):
        unit = value[-size:]
        if value.endswith(unit * n):
            times = n
            while value.endswith(unit * (times + 1)):
                times += 1
            return unit, times
    return None


def scene_id_problem(scene: str) -> str | None:
    """Why ``scene`` cannot be a scene id (pattern, length of its file names, Snakemake's periodic
    wildcards), or None."""
    if not SCENE_ID.fullmatch(scene):
        return f"{scene!r} does not match {SCENE_ID_PATTERN!r}"
    most = scene_id_bytes()
    if len(scene.encode()) > most:
        return (
            f"{_shown(scene)} is {len(scene.encode())} bytes long; the longest file name of a scene adds "
            f"{scene_name_overhead()} bytes to its id and a file name may have {NAME_MAX}: "
            f"give an id of at most {most} bytes"
        )
    periodic = periodic_end(scene)
    if periodic is not None:
        unit, times = periodic
        return (
            f"{_shown(scene)} ends in {unit!r} repeated {times} times, which Snakemake refuses as a "
            "periodic wildcard (it takes it for an endless recursion of rules); give another id"
        )
    return None


def check_scene_ids(scenes: Iterable[str], where: str) -> None:
    """Refuse, in one line naming ``where`` (a run file), a scene id that could not have been a run's:
    one read back from a file must never become a path outside its folder."""
    for scene in set(scenes):
        text = str(scene)
        if not SCENE_ID.fullmatch(text) or len(text.encode()) > NAME_MAX:
            raise OutcropError(
                f"{where}: scene {_shown(text)} is not a scene id (ids match "
                f"{SCENE_ID_PATTERN!r}); the file was not written by a run"
            )


def snakemake_record_bytes(workdir: str, output: str) -> int:
    """Length of the path where Snakemake records ``output`` (``.snakemake/incomplete/`` + the
    output path in URL-safe base64, cut into components of :data:`NAME_MAX`)."""
    encoded = base64.urlsafe_b64encode(output.encode()).decode()
    chunks = -(-len(encoded) // (NAME_MAX - 1))
    return len(os.path.join(workdir, ".snakemake", "incomplete").encode()) + len(encoded) + 2 * chunks


def check_run_paths(
    results: str, scenes: Iterable[str], where: str, workdir: str | None = None, demo: bool = False
) -> None:
    """Refuse a results folder (with the sheet's longest scene id) whose files, or Snakemake's records
    of them, would have paths longer than :data:`PATH_MAX`: said before any job, not as a traceback
    of the first job that writes one."""
    from outcrop.layout import Layout

    workdir = os.path.abspath(workdir or os.getcwd())
    longest = max(scenes, key=lambda s: len(s.encode()), default="x")
    paths = [*Layout(results).scene_paths(longest, demo=demo), *Layout(results).run_paths()]
    for path in paths:
        full = path if os.path.isabs(path) else os.path.join(workdir, path)
        problem = path_problem(full)
        record = snakemake_record_bytes(workdir, path)
        if problem is None and record >= PATH_MAX:
            problem = (
                f"Snakemake records it under .snakemake/ at a path of {record:,} bytes; a path may have "
                f"at most {PATH_MAX - 1}"
            )
        if problem is not None:
            raise OutcropError(
                f"{where}: the run would write {_shown(full)}: {problem}; give a shorter results "
                "folder (or shorter scene ids)"
            )
