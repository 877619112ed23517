"""Atomic file writing and the shared raster and table formats of the run.

Every file the package writes goes through :func:`atomic_path`: a killed process leaves at most a
hidden temporary file behind, never a file that looks complete, so Snakemake's rerun logic and the
user can trust whatever exists.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from outcrop.errors import OutcropError
from outcrop.layout import STAGING_SUFFIXES, temporary_name, temporary_stem

# Prepared scenes store reflectance as scaled uint16 (half the size of float32) with 0 as nodata.
PREPARED_SCALE = 1e-4
PREPARED_OFFSET = -0.1
PREPARED_NODATA = 0
ENCODE_CHUNK = 1 << 16  # values a step of encode_reflectance works on: 256 kB of float32, within a core's cache
# Prepared scenes are the largest files of a run and are written once per scene and read back
# at once by the tiles stage: ZSTD level 1 with horizontal differencing writes about 5x faster
# than DEFLATE's default level and reads 2x faster, at a slightly smaller size (measured on the
# Sentinel-2 benchmark scene, benchmarks/README.md). GDAL reads it since 2.3.
PREPARED_COMPRESSION = {"compress": "ZSTD", "level": 1, "predictor": 2}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to, renamed onto ``path`` only on success.

    The temporary name keeps the final suffix so that format-sniffing writers (GDAL, pyogrio,
    numpy) behave as they would on the real name. A write that fails for want of space is one
    :class:`OutcropError` naming ``path`` (:func:`full_disk_reported`), and leaves nothing.
    """
    final = Path(path)
    tmp = final.with_name(temporary_name(final.name, uuid.uuid4().hex[:8]))
    try:
        with full_disk_reported(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, final)
        _remove_stale_temporaries(final)
    finally:
        if tmp.exists():
            tmp.unlink()


# A full disk reaches Python in many shapes: OSError ENOSPC from Python's own writes and pyarrow,
# but RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from torch.save,
# OSError("262144 requested and 16352 written") from numpy, "TIFFAppendToStrip: Write error" from
# GDAL and "no such table: gpkg_contents" from the GeoPackage writer. Where the error itself does
# not say so, writing this many bytes beside the file (while the failed writer's temporary still
# holds its own) asks the file system: it fails with ENOSPC on a full disk and EDQUOT past a
# quota, which free-space figures (statvfs) do not show.
SPACE_PROBE_BYTES = 1 << 20
_FULL_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "no space left on device (disk quota exceeded)"}
_FULL_TEXTS = {
    "no space left on device": _FULL_ERRNOS[errno.ENOSPC],
    "disk quota exceeded": _FULL_ERRNOS[errno.EDQUOT],
    "database or disk is full": _FULL_ERRNOS[errno.ENOSPC],  # SQLite (GeoPackage)
    "free disk space available is": _FULL_ERRNOS[errno.ENOSPC],
}  # GDAL's own check


def no_space_reason(exc: BaseException, final: str | os.PathLike[str] | None = None) -> str | None:
    """Why ``exc`` is a full disk ("no space left on device", with "(disk quota exceeded)" past a
    quota), or None when it is not one.

    The exception and those it was raised from are read first (errno, then the words of the
    message); failing that, and given the ``final`` file that was being written, a probe of
    :data:`SPACE_PROBE_BYTES` is written beside it and removed.
    """
    seen: set[int] = set()
    chain: BaseException | None = exc
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno in _FULL_ERRNOS:
            return _FULL_ERRNOS[chain.errno]
        text = str(chain).lower()
        for words, reason in _FULL_TEXTS.items():
            if words in text:
                return reason
        chain = chain.__cause__ or chain.__context__
    return _probe_space(Path(final)) if final is not None else None


def _probe_space(final: Path) -> str | None:
    """Write :data:`SPACE_PROBE_BYTES` beside ``final`` and remove them: why they did not fit, or None.

    The probe is named as one more temporary of ``final`` (:func:`outcrop.layout.temporary_name`),
    so that one left by a killed process is swept with the others once ``final`` is written
    (:func:`_remove_stale_temporaries`), and its name is no longer than theirs (the room a scene
    id has, :func:`outcrop.limits.scene_id_bytes`, is measured on them).
    """
    probe = final.with_name(temporary_name(final.name, uuid.uuid4().hex[:8]))
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return _FULL_ERRNOS.get(exc.errno or 0)
    try:
        chunk = memoryview(bytes(64 << 10))
        left = SPACE_PROBE_BYTES
        while left > 0:
            left -= os.write(fd, chunk[:left])
        os.fsync(fd)  # a network file system may report a full disk only here
    except OSError as exc:
        return _FULL_ERRNOS.get(exc.errno or 0)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None


@contextlib.contextmanager
def full_disk_reported(final: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an error of the block that a full disk caused into one :class:`OutcropError` naming
    ``final`` ("no space left on device"); other errors pass through as they are.

    The block writes ``final`` or its temporaries beside it; they must still exist when its error
    arrives here, so that the probe meets the disk as the writer left it.
    """
    try:
        yield
    except OutcropError:
        raise
    except Exception as exc:
        reason = no_space_reason(exc, final)
        if reason is None:
            raise
        raise OutcropError(
            f"{final}: {reason}; free some space on its disk (or write elsewhere) and run again"
        ) from None


def _remove_stale_temporaries(final: Path) -> None:
    """Delete temporaries of ``final`` left by killed writers (with any staging suffix of theirs).

    Once ``final`` is written, they are garbage: no two jobs write the same file, so none of them
    belongs to a writer still at work. Without this a run killed again and again would pile them up.
    """
    prefix = f".{temporary_stem(final.name)}."
    pattern = re.compile(rf"{re.escape(prefix)}[0-9a-f]{{8}}\.tmp{re.escape(final.suffix)}(\..*)?")
    with os.scandir(final.parent) as entries:
        stale = [e.path for e in entries if e.name.startswith(prefix) and pattern.fullmatch(e.name)]
    for name in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def read_vector(path: str | os.PathLike[str], layer: str | None = None) -> Any:
    """A vector file (GeoPackage, GeoJSON, Shapefile, ...) as a GeoDataFrame, whatever its name holds;
    its first layer, or ``layer``.

    pyogrio parses a path as a URL first, and a URL's last segment drops everything after a `;`
    (`a;b.gpkg` opens `a`). A file whose name has one is read from its bytes instead.
    """
    import geopandas as gpd

    if ";" in os.fspath(path):
        with open(path, "rb") as fh:
            return gpd.read_file(fh.read(), engine="pyogrio", layer=layer)
    return gpd.read_file(path, engine="pyogrio", layer=layer)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically, keys sorted so that identical content gives identical bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save an array atomically in .npy format (memory-mappable on read)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array))


def load_npy(path: str | os.PathLike[str], mmap: bool = True) -> np.ndarray:
    """Load a .npy array, memory-mapped by default, with a clear error for a broken file."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise OutcropError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise OutcropError(f"{path}: not a readable .npy array ({exc})") from None


def write_geodataframe(path: str | os.PathLike[str], gdf: Any, layer: str | None = None) -> None:
    """Write a GeoDataFrame as GeoParquet (``.parquet``) or GeoPackage (``.gpkg``), atomically.

    A GeoPackage carries its layer's description and every field's plain name and description
    (:mod:`outcrop.fields`), which QGIS shows as layer abstract, field aliases and comments.
    """
    from outcrop.fields import LAYERS

    path = Path(path)
    if gdf.crs is None:
        raise OutcropError(f"{path}: refusing to write a table without a CRS")
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            gdf.to_parquet(tmp, index=False)
        elif path.suffix == ".gpkg":
            name = layer or path.stem
            options = {"DESCRIPTION": LAYERS[name]} if name in LAYERS else {}
            gdf.to_file(tmp, driver="GPKG", layer=name, engine="pyogrio", layer_options=options)
            describe_gpkg_fields(tmp, name, [c for c in gdf.columns if c != gdf.geometry.name])
        else:
            raise ValueError(f"{path}: unsupported vector format")


def describe_gpkg_fields(path: str | os.PathLike[str], layer: str, columns: Sequence[str]) -> None:
    """Record the plain name and description of ``columns`` of ``layer`` in the GeoPackage's
    ``gpkg_data_columns`` table (the GeoPackage schema extension), which GDAL reads as field
    alternative names and comments. Columns without an entry in :mod:`outcrop.fields` are left as
    they are."""
    import sqlite3

    from outcrop.fields import field_info

    rows = [(layer, c, *info) for c in columns if (info := field_info(str(c))) is not None]
    con = sqlite3.connect(os.fspath(path))
    try:
        with con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS gpkg_data_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL, "
                "name TEXT, title TEXT, description TEXT, mime_type TEXT, constraint_name TEXT, "
                "CONSTRAINT pk_gdc PRIMARY KEY (table_name, column_name), "
                "CONSTRAINT gdc_tn UNIQUE (table_name, name))"
            )
            con.execute(
                "CREATE TABLE IF NOT EXISTS gpkg_extensions (table_name TEXT, column_name TEXT, "
                "extension_name TEXT NOT NULL, definition TEXT NOT NULL, scope TEXT NOT NULL, "
                "CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))"
            )
            for table in ("gpkg_data_columns", "gpkg_data_column_constraints"):
                con.execute(
                    "INSERT OR IGNORE INTO gpkg_extensions VALUES (?, NULL, 'gpkg_schema', "
                    "'http://www.geopackage.org/spec121/#extension_schema', 'read-write')",
                    (table,),
                )
            con.executemany(
                "INSERT OR REPLACE INTO gpkg_data_columns (table_name, column_name, name, title, "
                "description) VALUES (?, ?, ?, ?, ?)",
                [(t, c, n, n, d) for t, c, n, d in rows],
            )
    finally:
        con.close()


def read_geoparquet(path: str | os.PathLike[str]) -> Any:
    """Read a GeoParquet table with a clear error for a missing or broken file.

    A ``scene`` column (tile tables, the index table, cluster labels) must hold scene ids: a run's
    files name scenes whose files other stages then open, and an edited table must not send them
    outside the run (``../../etc``).
    """
    import geopandas as gpd

    from outcrop.limits import check_scene_ids

    try:
        table = gpd.read_parquet(path)
    except FileNotFoundError:
        raise OutcropError(f"{path}: file not found") from None
    except Exception as exc:  # pyarrow raises many kinds
        raise OutcropError(f"{path}: not a readable GeoParquet table ({exc})") from None
    if "scene" in table.columns:
        check_scene_ids(table["scene"].astype(str).unique(), str(path))
    return table


def read_columns(path: str | os.PathLike[str]) -> Any:
    """A (Geo)Parquet table's columns but its footprints, as a DataFrame: a page drawn from a coast's
    ten million labelled tiles reads their labels and fractions in a second, not their geometry."""
    import pyarrow.parquet as pq

    try:
        names = [n for n in pq.read_schema(path).names if n != "geometry"]
        return pq.read_table(path, columns=names).to_pandas()
    except FileNotFoundError:
        raise OutcropError(f"{path}: file not found") from None
    except Exception as exc:  # pyarrow raises many kinds
        raise OutcropError(f"{path}: not a readable Parquet table ({exc})") from None


def write_cog(
    path: str | os.PathLike[str],
    array: np.ndarray,
    profile: dict[str, Any],
    band_names: Sequence[str] | None = None,
    tags: dict[str, Any] | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    resampling: str = "nearest",
    compression: dict[str, Any] | None = None,
    categories: Mapping[int, Mapping[int, str]] | None = None,
) -> None:
    """Write a (bands, rows, cols) array as a Cloud-Optimized GeoTIFF with overviews, atomically.

    ``profile`` needs crs, transform and nodata; dtype and shape come from the array.
    ``compression`` replaces the default DEFLATE creation options (for example ZSTD, see
    :data:`PREPARED_COMPRESSION`). ``categories`` names the classes of band (1-based) values, see
    :func:`write_categories`.
    """
    if array.ndim == 2:
        array = array[None]
    with cog_writer(
        path,
        profile,
        array.shape,
        array.dtype,
        band_names=band_names,
        tags=tags,
        colormap=colormap,
        resampling=resampling,
        compression=compression,
        categories=categories,
    ) as dst:
        dst.write(array)


@contextlib.contextmanager
def cog_writer(
    path: str | os.PathLike[str],
    profile: dict[str, Any],
    shape: tuple[int, int, int],
    dtype: Any,
    band_names: Sequence[str] | None = None,
    tags: dict[str, Any] | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    resampling: str = "nearest",
    compression: dict[str, Any] | None = None,
    categories: Mapping[int, Mapping[int, str]] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
) -> Iterator[Any]:
    """Yield an open tiled GeoTIFF of ``shape`` (bands, rows, cols) to write in windows; on exit,
    build its overviews and copy it into place as a COG, atomically.

    Why windows: a scene need not fit in memory to be written; GDAL builds the overviews and the
    COG block by block from the staged file. ``scales``/``offsets`` (one per band) are written as
    GDAL band scale and offset, so that GIS tools and xarray show physical values, not raw counts;
    ``categories`` are written beside the COG (:func:`write_categories`).
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy

    count, height, width = shape
    path = Path(path)
    base = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": np.dtype(dtype).name,
        "crs": profile["crs"],
        "transform": profile["transform"],
        "nodata": profile.get("nodata"),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
    }
    with atomic_path(path) as tmp:
        staging = tmp.with_name(tmp.name + STAGING_SUFFIXES[0])
        # The staging file is uncompressed: at least this many bytes, known before GDAL writes one
        # (GDAL's TIFF writer prints its own lines on a full disk; a refusal here comes first).
        require_space(path, count * height * width * np.dtype(dtype).itemsize, "its uncompressed staging copy")
        try:
            with full_disk_reported(path):  # inside: the staging file still exists when the probe runs
                with rasterio.open(staging, "w", **base) as dst:
                    yield dst
                    if band_names is not None:
                        for i, name in enumerate(band_names, start=1):
                            dst.set_band_description(i, str(name))
                    if tags:
                        dst.update_tags(**{k: str(v) for k, v in tags.items()})
                    if colormap is not None:
                        dst.write_colormap(1, colormap)
                    if scales is not None:
                        dst.scales = tuple(float(v) for v in scales)
                    if offsets is not None:
                        dst.offsets = tuple(float(v) for v in offsets)
                    factors = [f for f in (2, 4, 8, 16, 32) if min(height, width) // f >= 64]
                    if factors:
                        dst.build_overviews(factors, getattr(Resampling, resampling))
                rio_copy(
                    staging,
                    tmp,
                    driver="COG",
                    overview_resampling=resampling,
                    blocksize=256,
                    BIGTIFF="IF_SAFER",
                    **(compression or {"compress": "DEFLATE"}),
                )
                if categories:
                    write_categories(path, categories, colormap)
        finally:
            if staging.exists():
                staging.unlink()


def require_space(final: str | os.PathLike[str], nbytes: int, what: str) -> None:
    """Refuse to start writing ``final`` when its disk has fewer than ``nbytes`` free for ``what``.

    The free space a process may use: root may write into the blocks a file system keeps for it.
    A quota is not seen here; a write past it is reported by :func:`full_disk_reported`.
    """
    folder = Path(final).parent
    folder.mkdir(parents=True, exist_ok=True)
    stat = os.statvfs(folder)
    if stat.f_blocks == 0:  # a file system that reports no sizes (some FUSE mounts): nothing to check
        return
    free = (stat.f_bfree if os.geteuid() == 0 else stat.f_bavail) * stat.f_frsize
    if free < nbytes:
        raise OutcropError(
            f"{final}: no space left on device: {what} needs {_size(nbytes)}, {_size(free)} are free; "
            "free some space on its disk (or write elsewhere) and run again"
        )


def _size(nbytes: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""  # unreachable


# GDAL raster attribute table codes (gdal.h: GDALRATFieldType, GDALRATFieldUsage).
_RAT_INTEGER, _RAT_STRING = 0, 2
_RAT_MINMAX, _RAT_NAME, _RAT_RED, _RAT_GREEN, _RAT_BLUE, _RAT_ALPHA = 5, 2, 6, 7, 8, 9


def categories_xml(
    categories: Mapping[int, Mapping[int, str]], colormap: Mapping[int, tuple[int, int, int, int]] | None = None
) -> str:
    """GDAL's PAM XML that names the classes of each band: category names and a thematic raster
    attribute table (value, class, and the colour where ``colormap`` gives one, for band 1).

    Why both: GDAL's API and older QGIS read category names; QGIS 3.30+ reads the attribute table
    and labels the paletted legend with it ("rock", "cluster 7" instead of 1 and 7). A GeoTIFF
    cannot hold either, so GDAL keeps them in the ``.aux.xml`` beside the file.
    """
    parts = ["<PAMDataset>"]
    for band, names in sorted(categories.items()):
        values = sorted(int(v) for v in names)
        if values and values[0] < 0:
            raise ValueError("category values must be non-negative")
        listed = [""] * (values[-1] + 1 if values else 0)
        for v in values:
            listed[v] = str(names[v])
        coloured = colormap is not None and band == 1
        fields = [("value", _RAT_INTEGER, _RAT_MINMAX), ("class", _RAT_STRING, _RAT_NAME)]
        if coloured:
            fields += [
                (c, _RAT_INTEGER, u)
                for c, u in (("red", _RAT_RED), ("green", _RAT_GREEN), ("blue", _RAT_BLUE), ("alpha", _RAT_ALPHA))
            ]
        parts.append(f'  <PAMRasterBand band="{int(band)}">')
        parts.append("    <CategoryNames>")
        parts += [f"      <Category>{escape(n)}</Category>" for n in listed]
        parts.append("    </CategoryNames>")
        parts.append('    <GDALRasterAttributeTable tableType="thematic">')
        for i, (name, kind, usage) in enumerate(fields):
            parts.append(
                f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{kind}</Type><Usage>{usage}</Usage></FieldDefn>'
            )
        for row, v in enumerate(values):
            cells = [str(v), escape(str(names[v]))]
            if coloured:
                cells += [str(int(c)) for c in colormap.get(v, (0, 0, 0, 0))]  # type: ignore[union-attr]
            parts.append(f'      <Row index="{row}">' + "".join(f"<F>{c}</F>" for c in cells) + "</Row>")
        parts.append("    </GDALRasterAttributeTable>")
        parts.append("  </PAMRasterBand>")
    parts.append("</PAMDataset>")
    return "\n".join(parts) + "\n"


def write_categories(
    path: str | os.PathLike[str],
    categories: Mapping[int, Mapping[int, str]],
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
) -> None:
    """Write ``path``.aux.xml naming the classes of the raster at ``path`` (see :func:`categories_xml`)."""
    sidecar = Path(os.fspath(path) + ".aux.xml")
    with atomic_path(sidecar) as tmp:
        tmp.write_text(categories_xml(categories, colormap))


def read_categories(path: str | os.PathLike[str]) -> dict[int, dict[int, str]]:
    """Class names per band (1-based) from the ``.aux.xml`` beside a raster ({} where none)."""
    import xml.etree.ElementTree as ET

    sidecar = Path(os.fspath(path) + ".aux.xml")
    if not sidecar.is_file():
        return {}
    try:
        root = ET.parse(sidecar).getroot()
    except ET.ParseError as exc:
        raise OutcropError(f"{sidecar}: not readable XML ({exc})") from None
    out: dict[int, dict[int, str]] = {}
    for band in root.iter("PAMRasterBand"):
        names = [c.text or "" for c in band.iter("Category")]
        named = {i: n for i, n in enumerate(names) if n}
        if named:
            out[int(band.get("band", "1"))] = named
    return out


def encode_reflectance(reflectance: np.ndarray) -> np.ndarray:
    """Float reflectance (NaN or infinite = nodata) to the prepared uint16 encoding (0 = nodata).

    Works through the window a chunk of :data:`ENCODE_CHUNK` values at a time, in two small reused
    buffers: the six steps of the encoding then run in the CPU's cache, and the window is read once
    and its codes written once, where whole-window steps read and wrote a window-sized temporary
    six times (and faulted its pages in first).
    """
    flat = np.ascontiguousarray(reflectance, dtype=np.float32).reshape(-1)
    out = np.empty(flat.shape, dtype=np.uint16)
    work = np.empty(min(ENCODE_CHUNK, flat.size), dtype=np.float32)
    missing = np.empty(work.shape, dtype=bool)
    offset, scale = np.float32(PREPARED_OFFSET), np.float32(PREPARED_SCALE)
    for start in range(0, flat.size, ENCODE_CHUNK):
        part = flat[start : start + ENCODE_CHUNK]
        w, m = work[: len(part)], missing[: len(part)]
        np.subtract(part, offset, out=w)
        w /= scale
        np.rint(w, out=w)
        np.isfinite(w, out=m)
        np.logical_not(m, out=m)
        np.clip(w, 1, 65535, out=w)
        w[m] = PREPARED_NODATA
        out[start : start + len(part)] = w
    return out.reshape(np.shape(reflectance))


def decode_reflectance(dn: np.ndarray) -> np.ndarray:
    """Prepared uint16 encoding to float32 reflectance with NaN where nodata."""
    out = dn.astype(np.float32) * np.float32(PREPARED_SCALE) + np.float32(PREPARED_OFFSET)
    out[dn == PREPARED_NODATA] = np.nan
    return out


def write_prepared(
    path: str | os.PathLike[str],
    reflectance: np.ndarray,
    mask: np.ndarray,
    crs: Any,
    transform: Any,
    band_names: Sequence[str],
    tags: dict[str, Any] | None = None,
    mask_classes: Mapping[int, str] | None = None,
) -> None:
    """Write a prepared scene: C reflectance bands (scaled uint16) then one mask band."""
    with prepared_writer(path, crs, transform, band_names, mask.shape, tags, mask_classes) as write:
        write(0, 0, reflectance, mask)


@contextlib.contextmanager
def prepared_writer(
    path: str | os.PathLike[str],
    crs: Any,
    transform: Any,
    band_names: Sequence[str],
    shape: tuple[int, int],
    tags: dict[str, Any] | None = None,
    mask_classes: Mapping[int, str] | None = None,
) -> Iterator[Callable[[int, int, np.ndarray, np.ndarray], None]]:
    """Yield ``write(row, col, reflectance, mask)`` that stores one window of a prepared scene;
    the COG is built and moved into place when the block ends without error (nothing otherwise).

    The reflectance bands carry GDAL scale and offset and their canonical name as description,
    the mask band its class names (``mask_classes``), so that a GIS shows what each value means.
    """
    from rasterio.windows import Window

    all_tags = {"bands": ",".join(band_names), "scale": PREPARED_SCALE, "offset": PREPARED_OFFSET}
    all_tags.update(tags or {})
    count = len(band_names) + 1
    with cog_writer(
        path,
        {"crs": crs, "transform": transform, "nodata": PREPARED_NODATA},
        (count, *shape),
        np.uint16,
        band_names=[*band_names, "mask"],
        tags=all_tags,
        compression=PREPARED_COMPRESSION,
        scales=[PREPARED_SCALE] * (count - 1) + [1.0],
        offsets=[PREPARED_OFFSET] * (count - 1) + [0.0],
        categories={count: mask_classes} if mask_classes else None,
    ) as dst:

        def write(row: int, col: int, reflectance: np.ndarray, mask: np.ndarray) -> None:
            window = Window(col, row, mask.shape[1], mask.shape[0])
            dst.write(encode_reflectance(reflectance), indexes=list(range(1, count)), window=window)
            dst.write(mask.astype(np.uint16), indexes=count, window=window)

        yield write


def read_prepared(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[str]]:
    """Read a prepared scene: (reflectance float32 (C,H,W) NaN=nodata, mask uint8 (H,W), profile, bands)."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            data = src.read()
            profile = dict(src.profile)
            tags = src.tags()
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{path}: cannot read prepared scene ({exc})") from None
    bands = [b for b in tags.get("bands", "").split(",") if b]
    if len(bands) != data.shape[0] - 1:
        raise OutcropError(f"{path}: not a prepared scene (band list tag does not match {data.shape[0]} bands)")
    return decode_reflectance(data[:-1]), data[-1].astype(np.uint8), profile, bands
