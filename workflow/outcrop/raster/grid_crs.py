"""Which CRS a run grid may be in: a two-dimensional projected CRS in metres.

Why metres: the run measures everything on its grid in the grid CRS's units and takes them as
metres: ``grid.resolution`` (metres per pixel), the AOI buffer and the exclusion radius (km), the
deposits' buffer and the distances in ``analogues.csv`` and ``outcrop query``. A geographic CRS
would make ``resolution: 30`` thirty degrees a pixel (one pixel for a whole coast) and every
distance a count of degrees; a CRS in feet would be off by a factor of three. A PROJ pipeline or a
vertical or geocentric CRS is no grid at all, and rasterio accepts some of them only to fail in
the middle of the grid job. So the CRS is checked once, before any job, with the key named.
"""

from __future__ import annotations

from typing import Any

from outcrop.errors import OutcropError

EXAMPLES = "a UTM zone such as EPSG:32633, EPSG:3031 (Antarctic polar stereographic), or auto"


def check_grid_crs(text: str, where: str, resolution: Any = None) -> None:
    """Refuse ``text`` unless it is a 2-D projected CRS with axes in metres.

    ``where`` names the setting (``config: grid.crs``); ``resolution``, when a number, is named in
    the refusal of a CRS in other units, as the value it would have been read as.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(text)
    except CRSError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise OutcropError(f"{where}: {text!r} is not a coordinate reference system ({detail}); "
                           f"give a projected CRS in metres: {EXAMPLES}") from None
    axes = crs.axis_info
    if crs.is_geographic or (crs.is_projected and not crs.is_compound and len(axes) == 2):
        unit = axes[0].unit_name if axes else "unknown unit"
        factor = axes[0].unit_conversion_factor if axes else None
        if crs.is_projected and unit == "metre" and factor == 1.0:
            return
        kind = "a geographic CRS" if crs.is_geographic else "a projected CRS"
        as_read = ""
        if isinstance(resolution, (int, float)) and not isinstance(resolution, bool):
            as_read = f"; grid.resolution {resolution:g} would be read as {resolution:g} {unit} a pixel"
        raise OutcropError(f"{where}: {text!r} is {kind} with axes in {unit}{as_read}, but the run measures "
                           f"pixels, buffers and distances in metres: give a projected CRS in metres: {EXAMPLES}")
    kind = crs.type_name[:1].lower() + crs.type_name[1:]
    raise OutcropError(f"{where}: {text!r} is a {kind}, not a 2-D projected CRS a grid can "
                       f"be laid out in: give a projected CRS in metres: {EXAMPLES}")
