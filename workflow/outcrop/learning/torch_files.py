"""Reading the torch files outcrop writes (the encoder, the training checkpoint) without trusting them.

``torch.load(..., weights_only=True)`` never runs a file's code, but its refusals are written for
programmers: a pickle it will not build is answered with advice to load it again with
``weights_only=False``, which would run whatever the file asks for; a file of another kind gives
an ``IndexError``, an ``EOFError``, torch's advice about its legacy format, or a bare number. outcrop
writes only torch's zip format, so anything else is named for what it is before torch reads a
byte, and a refusal says why the file is not loaded, never how to load it anyway.

Usage::

    payload = read_torch_file(Path("results/model/encoder.pt"), "encoder file")
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from outcrop.errors import OutcropError

# torch.save's format is a zip archive; its first local file header starts with these bytes.
ZIP_MAGIC = b"PK\x03\x04"


def read_torch_file(path: str | Path, what: str, fix: str = "") -> Any:
    """The content of a torch file of outcrop's (``what``: "encoder file", "checkpoint"), loaded
    on the CPU with ``weights_only=True``; one :class:`OutcropError` naming the file and what is
    wrong with it otherwise, ending with ``fix`` (what to do about it) when one is given."""
    try:
        return _read(Path(path), what)
    except OutcropError as exc:
        if not fix:
            raise
        raise OutcropError(f"{exc}; {fix}") from None


def _read(path: Path, what: str) -> Any:
    import torch

    try:
        with open(path, "rb") as fh:
            head = fh.read(len(ZIP_MAGIC))
    except FileNotFoundError:
        raise OutcropError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise OutcropError(f"{path}: cannot read the {what} ({exc.strerror or type(exc).__name__})") from None
    if not head:
        raise OutcropError(f"{path}: not a readable {what}: the file is empty")
    if head != ZIP_MAGIC:
        raise OutcropError(
            f"{path}: not a readable {what}: not a torch zip archive, which is how outcrop writes "
            f"every {what}; the file is of another kind"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged archive
        # The weights-only unpickler refuses with pickle's UnpicklingError, known here by its name:
        # the package imports no pickle module at all (tests/test_atomic.py).
        if type(exc).__name__ == "UnpicklingError":
            raise OutcropError(
                f"{path}: not a readable {what}: it holds Python objects other than tensors and "
                f"plain values ({_what_it_asks_for(exc)}), so it is not an outcrop {what} and is "
                "not trusted; it was not loaded"
            ) from None
        raise OutcropError(
            f"{path}: not a readable {what}: the archive is damaged or cut short ({_detail(exc)})"
        ) from None


def _what_it_asks_for(exc: BaseException) -> str:
    """The global (a function or class) a refused pickle asks for, as torch names it."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f"it asks for {found.group(1)}" if found else "a kind of object torch does not load safely"


def _detail(exc: BaseException) -> str:
    """torch's message on one line, unless it gives advice about ``weights_only``."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if not text or "weights_only" in text:
        return type(exc).__name__
    return text[:300]
