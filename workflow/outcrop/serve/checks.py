"""Every value a request carries, checked before use: one clear 4xx error naming the field.

A request may come from anything that can reach the port, so each field is hostile until checked
here: JSON types exactly (a number is not a string, nor a boolean), coordinates finite and in range,
counts bounded, names short plain text, polygons small and simple, unknown fields refused.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_VERTICES = 500  # a drawn polygon's corners
MAX_POLYGON_KM = 200.0  # a drawn polygon's extent, either way
MAX_NAME = 200  # characters of a mark's name
SEARCH_ID = re.compile(r"[0-9a-f]{16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line message for the client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def fields(body: Any, allowed: set[str], where: str = "request") -> dict[str, Any]:
    """A JSON object with no field outside ``allowed``."""
    if not isinstance(body, dict):
        raise RequestError(f"{where}: expected a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return body


def number(value: Any, name: str, lo: float, hi: float) -> float:
    """A JSON number (not a boolean, not a string), finite, within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise RequestError(f"{name}: {value!r} is outside [{lo:g}, {hi:g}]")
    return value


def integer(value: Any, name: str, lo: int, hi: int) -> int:
    """A JSON integer within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise RequestError(f"{name}: {value} is outside [{lo}, {hi}]")
    return value


def lon_lat(value: Any, name: str) -> tuple[float, float]:
    """``{"lon": .., "lat": ..}`` in degrees."""
    body = fields(value, {"lon", "lat"}, name)
    if "lon" not in body or "lat" not in body:
        raise RequestError(f"{name}: needs lon and lat")
    return number(body["lon"], f"{name}.lon", -180.0, 180.0), number(body["lat"], f"{name}.lat", -90.0, 90.0)


def ring(value: Any, name: str) -> list[tuple[float, float]]:
    """A polygon's corners ``[[lon, lat], ...]`` (3 to :data:`MAX_VERTICES`; closing corner optional)."""
    if not isinstance(value, list):
        raise RequestError(f"{name}: expected a list of [lon, lat] corners")
    if len(value) > MAX_VERTICES + 1:
        raise RequestError(f"{name}: {len(value)} corners; at most {MAX_VERTICES}")
    corners = []
    for i, corner in enumerate(value):
        if not isinstance(corner, list) or len(corner) != 2:
            raise RequestError(f"{name}[{i}]: expected [lon, lat]")
        corners.append(
            (number(corner[0], f"{name}[{i}] lon", -180.0, 180.0), number(corner[1], f"{name}[{i}] lat", -90.0, 90.0))
        )
    if len(corners) > 1 and corners[0] == corners[-1]:
        corners = corners[:-1]
    if len(corners) < 3:
        raise RequestError(f"{name}: a polygon needs at least 3 corners")
    return corners


def polygon_in_run(corners: list[tuple[float, float]], project: Any, name: str) -> Any:
    """The polygon of lon/lat ``corners`` in the run's CRS: simple, with area, at most
    :data:`MAX_POLYGON_KM` across."""
    import numpy as np
    import shapely

    x, y = project(np.array([c[0] for c in corners]), np.array([c[1] for c in corners]))
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise RequestError(f"{name}: corners outside the run's coordinate system")
    shape = shapely.Polygon(np.column_stack([x, y]))
    if not shape.is_valid or shape.area <= 0:
        raise RequestError(f"{name}: not a simple polygon (its edges cross, or it has no area)")
    xmin, ymin, xmax, ymax = shape.bounds
    if max(xmax - xmin, ymax - ymin) > MAX_POLYGON_KM * 1000:
        raise RequestError(
            f"{name}: {max(xmax - xmin, ymax - ymin) / 1000:.0f} km across; at most {MAX_POLYGON_KM:g} km"
        )
    return shape


def text(value: Any, name: str) -> str:
    """A short plain-text name: a string of at most :data:`MAX_NAME` characters, no control characters."""
    if not isinstance(value, str):
        raise RequestError(f"{name}: expected a string")
    if len(value) > MAX_NAME or _CONTROL.search(value):
        raise RequestError(f"{name}: at most {MAX_NAME} characters, no control characters")
    return value.strip()


def choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise RequestError(f"{name}: expected one of {', '.join(options)}")
    return value
