"""Read a FAISS index file only after checking that the sizes its header claims fit in the file.

``faiss.read_index`` trusts the counts it reads: a 301-byte file whose header claims 2 GiB of
vectors makes it allocate 2 GiB before it notices that the bytes are not there (and a claim of
256 GiB ends in ``std::bad_alloc``). Every count in the kinds of index outcrop builds (flat, and
IVF-Flat or IVF-PQ with a flat quantizer and array inverted lists;
:func:`outcrop.search.index.index_vectors`) is
followed by the bytes it counts, so walking the header and checking each claim against the bytes
left in the file bounds what faiss will allocate by the file's own size. The layout follows
faiss/impl/index_write.cpp.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any

from outcrop.errors import OutcropError

_FLAT = {b"IxFI", b"IxF2", b"IxFl"}
_IVF_FLAT = b"IwFl"
_IVF_PQ = b"IwPQ"
_INVLISTS = b"ilar"


class _Claim(Exception):
    """A count in the file that the bytes after it cannot hold."""


class _Reader:
    """Bounded little-endian reads from a byte string; every claimed length is checked first."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.pos = 0

    def skip(self, n: int, what: str) -> int:
        """Step over ``n`` bytes (without copying them); return where they start."""
        left = len(self.data) - self.pos
        if n < 0 or n > left:
            raise _Claim(f"its header claims {_size(n)} of {what} but {left} byte(s) follow")
        self.pos += n
        return self.pos - n

    def take(self, n: int, what: str) -> bytes:
        start = self.skip(n, what)
        return bytes(self.data[start : self.pos])

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def skip_vector(self, item: int, what: str) -> int:
        """Skip a faiss vector (uint64 count, then count items); return the count."""
        (count,) = self.unpack("Q", what)
        if count > (len(self.data) - self.pos) // max(item, 1):
            raise _Claim(
                f"its header claims {count} {what} ({_size(count * item)}) "
                f"but {len(self.data) - self.pos} byte(s) follow"
            )
        self.skip(count * item, what)
        return count


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} byte(s)"


def _index(r: _Reader) -> None:
    """Walk one index (flat, IVF-Flat or IVF-PQ), raising :class:`_Claim` at the first claim too large."""
    kind = r.take(4, "index kind")
    if kind not in _FLAT and kind not in (_IVF_FLAT, _IVF_PQ):
        raise _Claim(f"index kind {kind!r} is not one outcrop builds (flat, IVF-Flat or IVF-PQ)")
    d, ntotal, _, _, _, metric = r.unpack("iqqqBi", "index header")
    if metric > 1:
        r.unpack("f", "metric argument")
    if d <= 0 or ntotal < 0:
        raise _Claim(f"its header claims dimension {d} and {ntotal} vectors")
    need = ntotal * d * 4 if kind != _IVF_PQ else ntotal * 8  # an IVF-PQ vector: its id and >= 1 byte of code
    if need > len(r.data):
        raise _Claim(
            f"its header claims {ntotal} vectors of dimension {d} ({_size(need)}) "
            f"but the file holds {len(r.data)} bytes"
        )
    if kind in _FLAT:
        values = r.skip_vector(4, "vector values")  # float32, written as a vector of floats
        if values != ntotal * d:
            raise _Claim(f"its header claims {ntotal} vectors of dimension {d} but holds {values} values")
        return
    nlist, _ = r.unpack("QQ", "IVF header")
    if nlist > len(r.data):
        raise _Claim(f"its header claims {nlist} inverted lists in a file of {len(r.data)} bytes")
    _index(r)  # the quantizer
    (map_type,) = r.unpack("B", "direct map")
    r.skip_vector(8, "direct map entries")
    if map_type == 2:
        r.skip_vector(16, "direct map hash entries")
    expected_code = d * 4
    if kind == _IVF_PQ:
        expected_code = _product_quantizer(r, d)
    if r.take(4, "inverted lists kind") != _INVLISTS:
        raise _Claim("its inverted lists are not array lists")
    lists, code_size = r.unpack("QQ", "inverted lists header")
    if lists != nlist or code_size != expected_code:
        raise _Claim(f"its inverted lists ({lists} of {code_size}-byte codes) do not match the index")
    list_type = r.take(4, "inverted lists layout")
    sizes = [0] * lists
    if list_type == b"full":
        count = r.skip_vector(8, "list sizes")
        if count != lists:
            raise _Claim(f"it gives {count} list sizes for {lists} lists")
        sizes = list(struct.unpack(f"<{count}Q", r.data[r.pos - 8 * count : r.pos]))
    elif list_type == b"sprs":
        count = r.skip_vector(8, "list sizes")
        pairs = struct.unpack(f"<{count}Q", r.data[r.pos - 8 * count : r.pos])
        for i in range(0, count - 1, 2):
            if pairs[i] >= lists:
                raise _Claim(f"it names list {pairs[i]} of {lists}")
            sizes[pairs[i]] = pairs[i + 1]
    else:
        raise _Claim(f"inverted lists layout {list_type!r} is unknown")
    if sum(sizes) != ntotal:
        raise _Claim(f"its inverted lists hold {sum(sizes)} vectors, its header {ntotal}")
    for n in sizes:
        r.skip(n * (code_size + 8), "list codes and ids")


def _product_quantizer(r: _Reader, d: int) -> int:
    """Walk IVF-PQ's by_residual flag, code size and product quantiser; return the code size."""
    _, code_size = r.unpack("BQ", "IVF-PQ header")
    pq_d, m, nbits = r.unpack("QQQ", "product quantizer header")
    if pq_d != d or m == 0 or d % m or not 1 <= nbits <= 16 or code_size != (m * nbits + 7) // 8:
        raise _Claim(
            f"its product quantizer ({m} sub-vectors of {nbits} bits over {pq_d} dimensions, "
            f"{code_size}-byte codes) does not match the index of dimension {d}"
        )
    centroids = r.skip_vector(4, "product quantizer centroids")
    if centroids != d * (1 << nbits):
        raise _Claim(f"its product quantizer holds {centroids} centroid values, not {d * (1 << nbits)}")
    return int(code_size)


def check_index_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`OutcropError` naming ``path`` unless every size its header claims fits in it.

    The file is memory-mapped and only its headers and list sizes are read: checking costs
    neither the index's memory nor a pass over its vectors.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise OutcropError(f"{path}: not a readable FAISS index (the file is empty)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                _index(_Reader(data))
    except FileNotFoundError:
        raise OutcropError(f"{path}: file not found") from None
    except _Claim as exc:
        raise OutcropError(f"{path}: not a readable FAISS index ({exc})") from None
    except OSError as exc:
        raise OutcropError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_index(path: str | os.PathLike[str], *, mapped: bool = False) -> Any:
    """:func:`faiss.read_index` of a file that passed :func:`check_index_file`; errors as one line.

    ``mapped``: memory-map the file instead of reading it (read-only use: a query). At 10 million
    tiles an IVF-PQ index is 0.7 GB; reading it took half a second of a query's one-second budget,
    mapping it takes milliseconds and the search touches only the lists it probes.
    """
    import faiss

    check_index_file(path)
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mapped else 0)
    except (RuntimeError, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutcropError(f"{path}: not a readable FAISS index ({first})") from None


__all__ = ["check_index_file", "read_index"]
