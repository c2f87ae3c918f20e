"""Google Earth Studio's globe and the local east-north-up (ENU) frame every pose in this project is expressed in.

Facts (verified on real exports, see ../shared/README.md):
- GES works on a sphere of radius 6,371,010 m. A Global export's `position` is exactly
  (6371010 + altitude) * unit(latitude, longitude) in ECEF axes, with `latitude` geocentric.
- So geodesy here is spherical, never WGS84: converting `coordinate` with WGS84 fits the rendered pixels 2-5x worse.

ENU frame used by the project ("world" for every aerial and registered ground camera):
- origin: a point on the GES sphere given as (latitude, longitude, altitude) on the sphere; by default the export's
  first track point (the landmark the orbit looks at);
- axes: x east, y north, z up, tangent to the sphere at the origin; units metres.
"""

from __future__ import annotations

import dataclasses

import numpy as np

GES_SPHERE_RADIUS_M = 6_371_010.0
WORLD_UP = np.array([0.0, 0.0, 1.0])  # up in the ENU world frame stage 2 writes (its z axis)


@dataclasses.dataclass(frozen=True)
class SpherePoint:
    """A point on/above the GES sphere: geocentric latitude and longitude in degrees, altitude above the sphere in metres."""

    latitude: float
    longitude: float
    altitude: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def sphere_to_ecef(point: SpherePoint) -> np.ndarray:
    """ECEF position (metres) of a point given on the GES sphere."""
    lat, lon = np.radians(point.latitude), np.radians(point.longitude)
    direction = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    return (GES_SPHERE_RADIUS_M + point.altitude) * direction


def ecef_to_sphere(xyz: np.ndarray) -> SpherePoint:
    """Latitude/longitude/altitude on the GES sphere of an ECEF position."""
    x, y, z = np.asarray(xyz, dtype=np.float64)
    radius = float(np.sqrt(x * x + y * y + z * z))
    latitude = float(np.degrees(np.arcsin(z / radius)))
    longitude = float(np.degrees(np.arctan2(y, x)))
    return SpherePoint(latitude, longitude, radius - GES_SPHERE_RADIUS_M)


def ecef_from_enu_rotation(latitude: float, longitude: float) -> np.ndarray:
    """3x3 rotation whose columns are the east, north and up axes at (latitude, longitude), in ECEF."""
    lat, lon = np.radians(latitude), np.radians(longitude)
    east = np.array([-np.sin(lon), np.cos(lon), 0.0])
    north = np.array([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)])
    up = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    return np.stack([east, north, up], axis=1)


@dataclasses.dataclass(frozen=True)
class WorldFrame:
    """The metric world frame poses are expressed in, tied to ECEF (or to a Local export's own axes).

    world = world_from_ecef_rotation @ (ecef - origin_ecef).
    kind 'enu': ENU at `origin` (see module docstring).
    kind 'local_ecef_axes': a GES Local export without a known origin: positions as exported (relative to the export's
    origin, axes parallel to ECEF, z is not up).
    """

    kind: str
    origin: SpherePoint | None
    origin_ecef: np.ndarray
    world_from_ecef_rotation: np.ndarray

    @classmethod
    def enu(cls, origin: SpherePoint) -> "WorldFrame":
        rotation = ecef_from_enu_rotation(origin.latitude, origin.longitude).T
        return cls("enu", origin, sphere_to_ecef(origin), rotation)

    @classmethod
    def local_ecef_axes(cls) -> "WorldFrame":
        return cls("local_ecef_axes", None, np.zeros(3), np.eye(3))

    def world_from_ecef(self, points: np.ndarray) -> np.ndarray:
        """Map ECEF positions (..., 3) into this frame."""
        return (np.asarray(points) - self.origin_ecef) @ self.world_from_ecef_rotation.T

    def ecef_from_world(self, points: np.ndarray) -> np.ndarray:
        """Map positions (..., 3) in this frame back to ECEF."""
        return np.asarray(points) @ self.world_from_ecef_rotation + self.origin_ecef

    def describe(self) -> dict:
        """JSON-ready description written next to every pose file."""
        if self.kind == "enu":
            axes = "x east, y north, z up; tangent to the GES sphere at the origin; metres"
        else:
            axes = "the Local export's own axes (parallel to ECEF, z not up), origin = the export's origin; metres"
        return {
            "kind": self.kind,
            "axes": axes,
            "origin": None if self.origin is None else self.origin.to_dict(),
            "origin_note": "geocentric latitude/longitude (degrees) and altitude (m) on the GES sphere",
            "sphere_radius_m": GES_SPHERE_RADIUS_M,
            "origin_ecef": self.origin_ecef.tolist(),
            "world_from_ecef_rotation": self.world_from_ecef_rotation.tolist(),
        }
