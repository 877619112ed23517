"""The ``outcrop`` command line: one subcommand per stage, explicit arguments, one clear error.

The workflow's rules call the stages' subcommands; users call them too, and the commands made for
them (``outcrop query`` against a finished run, ``outcrop info``, ``outcrop stac-search``,
``outcrop serve``), whose options that a config key also sets take it from the schema too. A stage's
subcommand is made from its declaration in :mod:`outcrop.stages`: an option per file, and an option
per setting, typed, ranged, defaulted and described by the setting's entry in the config schema.
Stage modules are imported only by the subcommand that runs, so ``outcrop --help`` and light
stages start fast. Bad input (``OutcropError``) prints one line naming the file and the problem and
exits with status 2; nothing half-written is left behind because every stage writes atomically.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from outcrop import __version__
from outcrop.config import schema_entry
from outcrop.errors import OutcropError
from outcrop.limits import ENV as LIMITS_ENV
from outcrop.stages import PATH, SOURCE, STAGE_LIST, STAGES, Arg, Stage, option


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- values from text, as the schema describes them ----------------------------------------------


def finite_float(text: str) -> float:
    """An argparse type: a real number; ``nan`` and ``inf`` (which ``float`` accepts) are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def yes_no(text: str) -> bool:
    """An argparse type: a config boolean as the rules pass it (true/false, yes/no, 1/0)."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not yes or no")


def _in_range(value: float, text: str, kind: Mapping[str, Any]) -> None:
    for key, fails, words in (
        ("minimum", lambda v, b: v < b, "is less than"),
        ("exclusiveMinimum", lambda v, b: v <= b, "is not greater than"),
        ("maximum", lambda v, b: v > b, "is greater than"),
        ("exclusiveMaximum", lambda v, b: v >= b, "is not less than"),
    ):
        if key in kind and fails(value, kind[key]):
            raise argparse.ArgumentTypeError(f"{text!r} {words} {kind[key]}")


def value_type(kind: Mapping[str, Any]) -> Callable[[str], Any]:
    """An argparse type for one value of a JSON-Schema entry: its type, range and allowed words."""
    if "anyOf" in kind:
        parsers = [value_type(k) for k in kind["anyOf"]]
        words = [str(k["const"]) for k in kind["anyOf"] if "const" in k]

        def either(text: str) -> Any:
            errors = []
            for parse in parsers:
                try:
                    return parse(text)
                except argparse.ArgumentTypeError as exc:
                    errors.append(str(exc))
            raise argparse.ArgumentTypeError(f"{errors[0]} (nor {' or '.join(words)})" if words else errors[0])

        return either
    if "const" in kind:
        const = kind["const"]

        def exactly(text: str) -> Any:
            if text.strip() != str(const):
                raise argparse.ArgumentTypeError(f"{text!r} is not {const}")
            return const

        return exactly
    kind_type = kind.get("type")
    if kind_type == "integer":

        def integer(text: str) -> int:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
            _in_range(value, text, kind)
            return value

        return integer
    if kind_type == "number":

        def number(text: str) -> float:
            value = finite_float(text)
            _in_range(value, text, kind)
            return value

        return number
    if kind_type == "boolean":
        return yes_no
    if kind_type == "array":
        item = value_type(kind.get("items", {}))
        if kind.get("items", {}).get("type") == "string":
            # names, never paths: also comma-separated (--bands red,nir,swir1)
            return lambda text: [item(part.strip()) for part in text.split(",") if part.strip()]
        return item
    enum = kind.get("enum")

    def text_value(text: str) -> str:
        if enum is not None and text not in enum:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(str, enum))}")
        if kind.get("minLength", 0) > len(text):
            raise argparse.ArgumentTypeError(f"{text!r} is too short")
        return text

    return text_value


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An optional argument also takes the empty text: not given (a rule passes `--scale=` for none)."""

    def parse_or_empty(text: str) -> Any:
        return "" if text == "" else parse(text)

    parse_or_empty.__name__ = getattr(parse, "__name__", "value")
    return parse_or_empty


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(map(_shown, value)) or "none"
    if isinstance(value, dict):
        return "none" if not value else ", ".join(f"{k}={v}" for k, v in value.items())
    return "none" if value in (None, "") else str(value)


# --- subcommands made from the stage declarations ------------------------------------------------


# Where each parsed command keeps (dest, name, local only) of its arguments that name files or
# folders, which are checked against the file system's limits before the command runs.
_FILE_ARGS = "file_arguments"


def _add_arg(p: argparse.ArgumentParser, arg: Arg, positional: bool = False) -> None:
    """The option (or, ``positional``, the positional argument) of ``arg``, as its declaration says."""
    parse = value_type(arg.kind)
    options: dict[str, Any] = {"dest": arg.param, "help": arg.help or None}
    if arg.many:
        options["nargs"] = "*" if arg.optional else "+"
        options["default"] = []
        options["required"] = not arg.optional
    elif arg.limit:  # left out: the run's limit, which the function reads (outcrop.limits)
        options["default"] = None
        options["help"] = (
            f"{arg.help} (default: the config's limits.{arg.limit}, as the workflow passes it in "
            f"{LIMITS_ENV}; else {_shown(schema_entry('limits.' + arg.limit)['default'])})"
        )
    elif "default" in arg.kind:  # an option of the command line that rules leave as it is
        options["default"] = arg.kind["default"]
        options["help"] = f"{arg.help} (default: {_shown(arg.kind['default'])})"
    else:
        options["required"] = not arg.optional
        options["default"] = ""
    if arg.names_files:
        options["metavar"] = "PATH" if arg.source != "output" else "OUT"
        files = p.get_default(_FILE_ARGS) or ()
        shown = arg.param if positional else arg.option
        p.set_defaults(**{_FILE_ARGS: (*files, (arg.param, shown, not arg.is_path))})
    if not arg.is_path:
        options["type"] = _optional(parse) if arg.optional else parse
    if positional:  # named by its dest; optional when it has a default
        del options["dest"]
        options.pop("required", None)
        options["metavar"] = arg.name
        if "default" in arg.kind:
            options["nargs"] = "?"
        else:
            options.pop("default", None)
        p.add_argument(arg.param, **options)
        return
    p.add_argument(arg.option, **options)


def _add_setting(p: argparse.ArgumentParser, param: str, key: str) -> None:
    entry = schema_entry(key)
    what = " ".join(str(entry.get("description", "")).split())
    default_value = entry.get("default")
    help_text = f"{what + ' ' if what else ''}(config: {key}; default: {_shown(default_value)})"
    flag = "--" + param.replace("_", "-")
    if entry.get("type") == "object":
        p.add_argument(
            flag,
            dest=param,
            action="append",
            metavar="KEY=VALUE",
            default=None,
            help=f"{help_text}; one KEY=VALUE per {flag}, VALUE read as JSON where it parses",
        )
        return
    options: dict[str, Any] = {"dest": param, "type": value_type(entry), "default": default_value, "help": help_text}
    if entry.get("type") == "array":
        options["nargs"] = "+" if entry.get("minItems", 0) > 0 else "*"
    enum = entry.get("enum") or entry.get("items", {}).get("enum")
    if enum:
        options["metavar"] = "{" + ",".join(map(str, enum)) + "}"
    p.add_argument(flag, **options)


def _stage_parser(sub: Any, stage: Stage) -> None:
    p = _add(sub, stage.command, _runner(stage), stage.summary, stage.example, stage.threads)
    for arg in stage.args:
        _add_arg(p, arg)
    for param, key in stage.setting_keys().items():
        _add_setting(p, param, key)


def _runner(stage: Stage) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        function = stage.load()
        if stage.threads:  # after the import: torch and FAISS are capped only once loaded
            from outcrop.runtime.threads import limit_threads

            limit_threads(args.threads)
        kwargs = stage.call_arguments(vars(args))
        if "log" in inspect.signature(function).parameters:
            kwargs["log"] = _log
        function(**kwargs)

    return run


# --- commands for users ----------------------------------------------------------------------------

_RESULTS = schema_entry("results")["default"]  # a finished run's folder, where the workflow writes by default


def cmd_stac_search(args: argparse.Namespace) -> None:
    from outcrop.raster.stac import expand_stac, write_scene_sheet

    try:
        bbox = [float(v) for v in args.bbox.split(",")] if args.bbox else None
    except ValueError:
        raise OutcropError(f"--bbox {args.bbox!r}: expected four numbers west,south,east,north") from None
    headers = {}
    for text in args.header or []:
        name, sep, value = text.partition(":")
        if not sep or not name.strip() or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip()):
            raise OutcropError(f"--header {text!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    rows = expand_stac(
        args.source,
        collection=args.collection or None,
        bbox=bbox,
        datetime=args.datetime or None,
        max_cloud=args.max_cloud,
        role=args.role,
        limit=args.limit,
        headers=headers,
    )
    added = write_scene_sheet(rows, args.out, append=args.append)
    _log(f"stac-search: {len(rows)} item(s) found, {added} new scene(s) written to {args.out}")


def _stac_search_parser(sub: Any) -> None:
    p = _add(
        sub,
        "stac-search",
        cmd_stac_search,
        "write a scene sheet from a STAC item, catalog or API search",
        "outcrop stac-search https://earth-search.aws.element84.com/v1/search --collection sentinel-2-l2a "
        "--bbox 162,-78,167,-76 --datetime 2023-11-01/2024-02-28 --max-cloud 20 --out scenes.tsv",
        False,
    )
    _add_arg(
        p,
        Arg("source", "", SOURCE, help="STAC item, item collection, static catalog, API landing page or /search URL"),
        positional=True,
    )
    _add_arg(p, Arg("out", "output", PATH, help="scene sheet (TSV) to write"))
    p.add_argument("--append", action="store_true", help="add new items to an existing sheet")
    p.add_argument("--collection", default="", help="collection id(s), comma-separated")
    p.add_argument(
        "--bbox", default="", help="west,south,east,north in degrees (write --bbox=-60,55,-40,70 for a negative west)"
    )
    p.add_argument("--datetime", default="", help="RFC 3339 date, datetime or interval (a/b, ../b, a/..)")
    p.add_argument("--max-cloud", type=non_negative_float, default=None, help="largest eo:cloud_cover in percent")
    p.add_argument("--role", default="index", choices=["train", "index"])
    p.add_argument("--limit", type=positive_int, default=100, help="items per page of an API search")
    p.add_argument(
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        help="HTTP header sent with every request, for catalogs that need a token "
        "(e.g. --header 'Authorization: Bearer ...'); repeat for more",
    )


def cmd_query(args: argparse.Namespace) -> None:
    from outcrop.runtime.threads import limit_threads
    from outcrop.search.query import FORMATS, query_columns

    limit_threads(args.threads)
    columns = query_columns(
        Path(args.results),
        lon=args.lon,
        lat=args.lat,
        tile=args.tile,
        geometry=Path(args.geometry) if args.geometry else None,
        top=args.top,
    )
    print(FORMATS[args.format](columns))


def _query_parser(sub: Any) -> None:
    p = _add(
        sub,
        "query",
        cmd_query,
        "top analogues of a place, against a finished run",
        "outcrop query --results results --lon 142.7 --lat -67.25 --top 10",
    )
    _add_arg(p, option("results", {**PATH, "default": _RESULTS}, help="a finished run's results folder"))
    p.add_argument("--lon", type=finite_float)
    p.add_argument("--lat", type=finite_float)
    p.add_argument("--tile", help="SCENE:TILE_ID")
    _add_arg(p, Arg("geometry", "input", PATH, optional=True, help="polygon file"))
    p.add_argument("--top", type=positive_int, default=10)
    p.add_argument(
        "--format",
        choices=("table", "csv", "geojson"),
        default="table",
        help="plain-text table (default), CSV, or GeoJSON points at the tile centres",
    )


def cmd_info(args: argparse.Namespace) -> None:
    from outcrop.figures.report import run_info

    print(run_info(Path(args.results)))


def _info_parser(sub: Any) -> None:
    p = _add(
        sub,
        "info",
        cmd_info,
        "summarise a finished run: scenes, tiles per surface, model, index, clusters, top analogues",
        "outcrop info results",
        False,
    )
    _add_arg(
        p, option("results", {**PATH, "default": _RESULTS}, help="a finished run's results folder"), positional=True
    )


def cmd_serve(args: argparse.Namespace) -> None:
    from outcrop.serve.server import LOCAL, open_server

    if args.host not in LOCAL:
        print(
            f"outcrop serve: warning: listening on {args.host}, not on this machine only: anyone who can "
            "reach it can read the run and change the marks",
            file=sys.stderr,
            flush=True,
        )
    server = open_server(
        Path(args.results),
        marks=Path(args.marks) if args.marks else None,
        deposits=Path(args.deposits) if args.deposits else None,
        host=args.host,
        port=args.port,
        threads=args.threads,
        buffer_m=args.buffer_m,
        exclusion_km=args.exclusion_km,
        site_overlap=args.site_overlap or None,
        title=args.title,
        log=_log,
    )
    _log(f"serve: open {server.url} (Ctrl-C stops)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _serve_parser(sub: Any) -> None:
    """Register ``outcrop serve`` on the command line's subparsers."""
    p = _add(
        sub,
        "serve",
        cmd_serve,
        "search a finished run from a live map: click, mark right and wrong, "
        "search again, export (a local web application)",
        "outcrop serve results",
        False,
    )
    _add_arg(
        p, option("results", {**PATH, "default": _RESULTS}, help="a finished run's results folder"), positional=True
    )
    _add_arg(
        p,
        Arg(
            "marks",
            "output",
            PATH,
            optional=True,
            help="the marks GeoPackage, saved as you mark (default: <results>-marks.gpkg beside the results folder)",
        ),
    )
    _add_arg(
        p,
        Arg(
            "deposits",
            "input",
            PATH,
            optional=True,
            help="the run's known deposits, shown on the map (default: the demo's, for a demo run)",
        ),
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; another address is warned about)",
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--threads", type=positive_int, default=4, help="searches answered at once (default 4)")
    p.add_argument("--title", default="", help="the page title")
    # A click or a mark selects and excludes tiles as the analogues stage does: its settings, as it takes them.
    for param in ("buffer_m", "exclusion_km", "site_overlap"):
        _add_setting(p, param, f"analogues.{param}")


# --- parser ---------------------------------------------------------------------------------------


def _add(
    sub: Any, name: str, func: Callable[[argparse.Namespace], None], help_text: str, example: str, threads: bool = True
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
    if threads:
        p.add_argument("--threads", type=positive_int, default=1, help="cores for this step (default 1)")
    return p


positive_int = value_type({"type": "integer", "minimum": 1})
non_negative_float = value_type({"type": "number", "minimum": 0})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outcrop",
        description="Self-supervised mapping of coastal geology and mineral-occurrence analogues.",
    )
    parser.add_argument("--version", action="version", version=f"outcrop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGE_LIST:
        _stage_parser(sub, stage)
    for add_parser in (_stac_search_parser, _query_parser, _info_parser, _serve_parser):
        add_parser(sub)
    return parser


# GDAL's block cache defaults to 5% of the usable memory (1.2 GiB on 24 GiB) and fills up on any
# scene larger than that, so a job's peak memory would follow the machine, not the window a stage
# works in. 256 MB holds every block a windowed read or write touches at once; less is kept where
# GDAL's own default is smaller (a job under a memory limit). A user's GDAL_CACHEMAX is left as is.
GDAL_CACHE_BYTES = 256 << 20


def _gdal_cache_bytes() -> int:
    import resource

    usable = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        usable = min(usable, limit)
    return max(16 << 20, min(GDAL_CACHE_BYTES, usable // 20))


def main(argv: Sequence[str] | None = None) -> int:
    from outcrop.runtime.allocator import keep_large_blocks

    # Set for this command only: main() also runs inside other processes (tests, notebooks), whose
    # later children must not inherit a cap computed for this one.
    own_cache = "GDAL_CACHEMAX" not in os.environ
    if own_cache:
        os.environ["GDAL_CACHEMAX"] = str(_gdal_cache_bytes())
    # malloc's settings hold for the whole process, so the process's entry sets them, once, for the
    # commands whose work allocates and frees same-sized large arrays in turn (batches of tiles).
    if _keeps_large_blocks(argv):
        keep_large_blocks()
    try:
        return _run(argv)
    finally:
        if own_cache:
            os.environ.pop("GDAL_CACHEMAX", None)


def _keeps_large_blocks(argv: Sequence[str] | None) -> bool:
    """Whether this command keeps large freed blocks in its heap: every command but the stages that
    declare otherwise. Prepare and tile work through windows and strips of many sizes, and measured
    slower and far less steady with it (Virginia prepare + tile, 9 runs each: 0.95 s median, 0.73 to
    1.53, against 0.64 s, 0.61 to 0.67; a full Landsat scene equal); training and embedding loop
    over batches of one shape, for which it was made."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in words if not word.startswith("-")), "")
    stage = STAGES.get(command)
    return stage is None or stage.keeps_large_blocks


def _check_path_arguments(args: argparse.Namespace) -> None:
    """A path too long for the file system, refused naming its argument (the system's own error
    would surface later as a traceback, or after part of the work). The arguments checked are those
    declared as files (``format: path``), and sources (``format: source``) where they are local:
    a remote source is a URL."""
    from outcrop.limits import check_path
    from outcrop.raster.sheets import local_input

    for dest, name, local_only in getattr(args, _FILE_ARGS, None) or ():
        value = getattr(args, dest)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and (not local_only or local_input(item)):
                check_path(item, name)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from outcrop.runtime.stopping import Interrupted

    try:
        _check_path_arguments(args)
        args.func(args)
    except Interrupted as exc:  # stopped on a signal, its state saved: not an error, but not done
        print(f"outcrop {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:  # Ctrl-C: what was saved is in the log; no traceback
        print(f"outcrop {args.command}: stopped by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except OutcropError as exc:
        # One line, whatever a wrapped library put in the message: logs and job failures stay greppable.
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"outcrop {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk met outside the writers of outcrop.io (a folder made, a lock taken)
        from outcrop.io import no_space_reason

        reason = no_space_reason(exc)
        if reason is None:
            raise
        print(f"outcrop {args.command}: error: {exc.filename or 'a file'}: {reason}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
