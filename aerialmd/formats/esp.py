"""Google Earth Studio project files (.esp): orbit projects written for GES, and any .esp decoded into cameras.

Why: the aerial half of every scene starts as a GES project. Writing it from the scene's latitude/longitude replaces
placing orbits by hand in the GES editor; decoding projects lets tests (and users) check what a project will render.

The format, as read off the real projects in ../shared/data/real (esp/, ges_gesblender_local/GESblender.esp,
ges_zoom_render_no_json/zoomin2020.esp; GES version 16 saves and version 17 quick-start projects):
- JSON. Top level: `modelVersion`; `settings` {name, frameRate, dimensions {width, height}, duration (frames),
  timeFormat 'frames'|'time'}; `scenes` (one); `playbackManager.range` {start, end}: the frames rendered, both ends
  included (GESblender: end 60, and its tracking export has 61 `cameraFrames`).
- `scenes[0]`: `animationModel` {roving, logarithmic, groupedPosition}, `duration` (frames), `attributes`: a tree of
  groups named by `type`:
      cameraGroup > cameraPositionGroup > position > longitude, latitude, altitude     (the camera)
      cameraGroup > cameraRotationGroup > rotationX, rotationY [, rotationZ]
      cameraGroup > cameraTargetEffect > poi > longitudePOI, latitudePOI, altitudePOI  (the look-at point)
                                       > influence [, enabled (quick-start projects)]
      cameraGroup > cameraLensGroup > fov
      environmentGroup > planet, clouds, time of day ... (not used here)
  and `cameraExport.trackPoints`: points written into the 3D-tracking JSON (`isOrigin`: origin of a Local export).
- Every leaf stores normalised numbers: `value.relative` (its value at the playhead) and `keyframes`
  [{time, value, transitionIn, transitionOut}] with `value` in [0, 1] and `time` the fraction of the scene duration
  (frame = time * duration: GESblender 0.1333 * 450 = frame 60; quick-start 0.8411 * 2700 = frame 2271).
- physical = minValueRange + relative * (maxValueRange - minValueRange). Version 16 files carry the ranges in `value`;
  quick-start files omit them and the same ranges decode them to their landmarks (Memorial Church, Transamerica,
  San Jose, Berlin), so they are the defaults here:
      longitude, longitudePOI   [-180, 180]         degrees
      latitude, latitudePOI     [-89.9999, 89.9999] degrees; latitude on the GES sphere, as in the tracking JSON
      altitude, altitudePOI     [1, 65117481]       metres above the GES sphere (the JSON's coordinate.altitude)
      rotationX                 [0, 360]            heading: compass bearing of the view, clockwise from north
                                                    (one v16 template uses [-180, 180]: the same angle)
      rotationY                 [0, 180]            tilt from the nadir: 0 looks straight down, 90 at the horizon
      rotationZ                 [0, 360]            roll; 0 in every real file, so its sign is unverified
      fov                       [1, 179]            degrees; taken as the tracking JSON's fovVertical (unverified:
                                                    no real project here sets a fov and has an export)
      influence                 [0, 1]              weight of the camera target
  Heading and tilt are taken in the east-north-up frame at the camera, on the GES sphere (geodesy.py).
- Logarithmic altitude (`animationModel.logarithmic`, or a `value.logarithmic` of its own in quick-start files):
  altitudes, camera and POI, store the 15th root of the linear fraction,
  relative = ((altitude - 1) / (65117481 - 1)) ** (1 / 15). Verified on zoomin2020.esp: with 15, the heading/tilt
  stored at its last keyframe point at its POI within 1e-6 degrees; 14 or 16 miss by 17 and 9 degrees.
- Camera target: with influence 1 the camera looks exactly at the POI with a level horizon (GESblender: its tracking
  JSON's rotations point at the POI within 1e-5 degrees, roll 0), and rotationX/Y are ignored; they may be stale
  (GESblender's are up to 8 degrees off). For an influence between 0 and 1 this module slerps the two orientations: an
  unverified approximation (GES blends in its own way).
- Checked end to end on GESblender: its keyframes (frames 0 and 60) decode to the camera positions of its tracking
  JSON within 1e-9 m and to its rotations within 2e-6 degrees, and its track point to the origin in ../shared/README.md.
- Between keyframes GES eases (Bezier handles in transitionIn/Out); decoding here interpolates linearly, so only
  keyframe times are exact. Projects written here have a keyframe on every frame, so every rendered frame is exact.

What `build_esp` writes (version 16, the layout of GES's own GESblender.esp): per frame, keyframes for longitude,
latitude, altitude, rotationX (heading) and rotationY (tilt) with linear transitions; the camera target on the
look-at point with influence 1; a constant fov; the look-at point as the first track point (`isOrigin`), which the
pipeline then takes as the ENU origin of the exported cameras; duration = frames - 1 and the render range 0..frames-1,
so frame i of the render is camera i. Orbits are consecutive: the camera jumps from one orbit to the next between two
frames. Serialisation is compact JSON with a fixed key order: the same spec gives a byte-identical file.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from aerialmd.atomic import write_text_atomic
from aerialmd.formats.ges_json import rotation_deg_from_ecef_from_camera
from aerialmd.geometry.geodesy import (
    GES_SPHERE_RADIUS_M,
    SpherePoint,
    WorldFrame,
    ecef_from_enu_rotation,
    ecef_to_sphere,
    sphere_to_ecef,
)

ESP_MODEL_VERSION = 16
LOG_ALTITUDE_EXPONENT = 15
POSITION_GROUP_RANGE = (0, 71488366.22893658)  # the `position` group's own range in GES files (meaning unknown)
POI_GROUP_RANGE = (-6371022.11950216, 71488366.22893658)  # the `poi` group's own range in GES files
TRACK_POINT_COLOR = "#148fbc"
LINEAR_TRANSITION = {"x": 0, "y": 0, "type": "linear"}


class EspError(ValueError):
    """A .esp project or an input file that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class ValueRange:
    """The physical range a normalised .esp value maps onto: physical = minimum + relative * (maximum - minimum)."""

    minimum: float
    maximum: float

    def encode(self, value: float) -> float:
        """Normalised value of a physical one."""
        return (value - self.minimum) / (self.maximum - self.minimum)

    def decode(self, relative: float) -> float:
        """Physical value of a normalised one."""
        return self.minimum + relative * (self.maximum - self.minimum)

    def to_json(self) -> dict[str, float]:
        """The `value` block's range keys, in GES's order."""
        return {"maxValueRange": self.maximum, "minValueRange": self.minimum}


LONGITUDE_RANGE = ValueRange(-180, 180)
LATITUDE_RANGE = ValueRange(-89.9999, 89.9999)
ALTITUDE_RANGE = ValueRange(1, 65117481)
HEADING_RANGE = ValueRange(0, 360)
TILT_RANGE = ValueRange(0, 180)
ROLL_RANGE = ValueRange(0, 360)
FOV_RANGE = ValueRange(1, 179)
UNIT_RANGE = ValueRange(0, 1)

DEFAULT_RANGES: dict[str, ValueRange] = {
    "longitude": LONGITUDE_RANGE, "longitudePOI": LONGITUDE_RANGE,
    "latitude": LATITUDE_RANGE, "latitudePOI": LATITUDE_RANGE,
    "altitude": ALTITUDE_RANGE, "altitudePOI": ALTITUDE_RANGE,
    "rotationX": HEADING_RANGE, "rotationY": TILT_RANGE, "rotationZ": ROLL_RANGE,
    "fov": FOV_RANGE, "influence": UNIT_RANGE, "enabled": UNIT_RANGE,
}


# ----------------------------------------------------------------------------------------------------------------------
# Altitude encoding (linear or logarithmic)


def encode_altitude(altitude_m: float, logarithmic: bool = False, where: str = "altitude") -> float:
    """Normalised .esp value of an altitude above the GES sphere (metres); `where` names it in the error."""
    if not math.isfinite(altitude_m) or not ALTITUDE_RANGE.minimum <= altitude_m <= ALTITUDE_RANGE.maximum:
        raise EspError(f"{where}: {altitude_m} m is outside GES's altitude range "
                       f"[{ALTITUDE_RANGE.minimum}, {ALTITUDE_RANGE.maximum}] m")
    linear = ALTITUDE_RANGE.encode(altitude_m)
    return linear ** (1.0 / LOG_ALTITUDE_EXPONENT) if logarithmic else linear


def decode_altitude(relative: float, logarithmic: bool = False, value_range: ValueRange = ALTITUDE_RANGE) -> float:
    """Altitude (metres above the GES sphere) of a normalised .esp value."""
    linear = max(relative, 0.0) ** LOG_ALTITUDE_EXPONENT if logarithmic else relative
    return value_range.decode(linear)


# ----------------------------------------------------------------------------------------------------------------------
# Camera geometry on the GES sphere (OpenCV camera axes: x right, y down, z forward)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def look_at_rotation(camera: SpherePoint, target: SpherePoint) -> np.ndarray:
    """3x3 ECEF-from-camera rotation of a camera at `camera` looking at `target` with a level horizon: what GES
    renders with the camera target at influence 1."""
    position = sphere_to_ecef(camera)
    forward = _unit(sphere_to_ecef(target) - position)
    right = np.cross(forward, _unit(position))
    if np.linalg.norm(right) < 1e-9:
        raise ValueError(f"camera {camera} looks straight up or down at {target}: its heading is undefined")
    right = _unit(right)
    return np.stack([right, np.cross(forward, right), forward], axis=1)


def heading_tilt_rotation(camera: SpherePoint, heading_deg: float, tilt_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """3x3 ECEF-from-camera rotation of GES's rotationX (heading), rotationY (tilt from nadir) and rotationZ (roll,
    applied about the view direction; its sign is unverified) at `camera`."""
    h, t, r = np.radians([heading_deg, tilt_deg, roll_deg])
    forward = np.array([np.sin(t) * np.sin(h), np.sin(t) * np.cos(h), -np.cos(t)])
    right = np.array([np.cos(h), -np.sin(h), 0.0])
    down = np.cross(forward, right)
    right, down = np.cos(r) * right + np.sin(r) * down, -np.sin(r) * right + np.cos(r) * down
    return ecef_from_enu_rotation(camera.latitude, camera.longitude) @ np.stack([right, down, forward], axis=1)


def heading_tilt_of(camera: SpherePoint, ecef_from_camera: np.ndarray) -> tuple[float, float]:
    """GES heading (0-360, clockwise from north) and tilt (from nadir) of a camera's view direction."""
    forward = ecef_from_enu_rotation(camera.latitude, camera.longitude).T @ ecef_from_camera[:, 2]
    heading = math.degrees(math.atan2(forward[0], forward[1])) % 360.0
    heading = 0.0 if heading >= 360.0 else heading  # -1e-15 % 360 == 360.0
    tilt = math.degrees(math.acos(float(np.clip(-forward[2], -1.0, 1.0))))
    return heading, tilt


def point_at_bearing(center: SpherePoint, bearing_deg: float, distance_m: float, altitude_m: float) -> SpherePoint:
    """The point `distance_m` from `center` along the sphere (arc length at the centre's altitude) in the compass
    direction `bearing_deg`, at `altitude_m` above the GES sphere."""
    delta = distance_m / (GES_SPHERE_RADIUS_M + center.altitude)
    b = math.radians(bearing_deg)
    east, north, up = ecef_from_enu_rotation(center.latitude, center.longitude).T
    direction = math.cos(delta) * up + math.sin(delta) * (math.sin(b) * east + math.cos(b) * north)
    on_sphere = ecef_to_sphere(direction * GES_SPHERE_RADIUS_M)
    return SpherePoint(on_sphere.latitude, on_sphere.longitude, float(altitude_m))


# ----------------------------------------------------------------------------------------------------------------------
# Trajectory specification


@dataclasses.dataclass(frozen=True)
class OrbitSpec:
    """`frames` cameras on a circle around the target, all looking at it.

    height_m: camera altitude above the target's altitude; radius_m: horizontal distance from the target (arc length
    on the sphere); the full circle, or an arc of `arc_deg` (ends included), starting at the compass bearing
    `start_bearing_deg` (seen from the target) and turning clockwise seen from above.
    """

    height_m: float
    radius_m: float
    frames: int
    arc_deg: float = 360.0
    start_bearing_deg: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.height_m) and math.isfinite(self.radius_m)) or self.radius_m <= 0:
            raise ValueError(f"orbit: needs a finite height and a radius > 0 m, got height {self.height_m}, "
                             f"radius {self.radius_m}")
        if self.frames < 1:
            raise ValueError(f"orbit: needs at least one frame, got {self.frames}")
        if not 0 < self.arc_deg <= 360:
            raise ValueError(f"orbit: arc must be in (0, 360] degrees, got {self.arc_deg}")

    @classmethod
    def from_tilt(cls, height_m: float, tilt_deg: float, frames: int, **kwargs: float) -> "OrbitSpec":
        """The orbit whose cameras `height_m` above the target see it at `tilt_deg` from the nadir (flat-ground
        approximation: radius = height * tan(tilt))."""
        if height_m <= 0 or not 0 < tilt_deg < 90:
            raise ValueError(f"orbit: a tilt orbit needs height > 0 and 0 < tilt < 90 degrees, got {height_m} m, "
                             f"{tilt_deg} degrees")
        return cls(height_m, height_m * math.tan(math.radians(tilt_deg)), frames, **kwargs)

    @property
    def tilt_deg(self) -> float:
        """Tilt from the nadir of the view towards the target (flat-ground approximation)."""
        return math.degrees(math.atan2(self.radius_m, self.height_m))

    def bearings_deg(self) -> np.ndarray:
        """Compass bearing of every camera seen from the target."""
        if self.arc_deg >= 360.0:
            steps = 360.0 * np.arange(self.frames) / self.frames
        else:
            steps = self.arc_deg * np.arange(self.frames) / max(self.frames - 1, 1)
        return (self.start_bearing_deg + steps) % 360.0


# Hints from the sample scene's orbits (aerialmd/sample_scene) scaled to real landmarks: low oblique to steep views.
DEFAULT_HEIGHTS_M = (50.0, 120.0, 250.0, 450.0)
DEFAULT_RADII_M = (200.0, 280.0, 380.0, 500.0)
DEFAULT_FRAMES_PER_ORBIT = 60
DEFAULT_FOV_DEG = 40.0  # the quick-start template's fov, and the sample scene's


@dataclasses.dataclass(frozen=True)
class EspProjectSpec:
    """Everything a written project depends on. `target` is the look-at point (GES sphere latitude/longitude and
    altitude); `fov_deg` the field of view; `logarithmic` writes logarithmic altitudes (not needed for orbits near
    the ground)."""

    name: str
    target: SpherePoint
    orbits: tuple[OrbitSpec, ...]
    width: int = 1920
    height: int = 1080
    frame_rate: float = 30.0
    fov_deg: float = DEFAULT_FOV_DEG
    logarithmic: bool = False
    target_name: str = "target"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("project: empty name")
        if not self.orbits:
            raise ValueError("project: no orbit")
        if self.num_frames < 2:
            raise ValueError(f"project: needs at least 2 frames in all, got {self.num_frames}")
        if not (LATITUDE_RANGE.minimum <= self.target.latitude <= LATITUDE_RANGE.maximum
                and LONGITUDE_RANGE.minimum <= self.target.longitude <= LONGITUDE_RANGE.maximum):
            raise ValueError(f"project: target latitude/longitude out of range: {self.target}")
        if self.width <= 0 or self.height <= 0 or self.frame_rate <= 0:
            raise ValueError(f"project: invalid size {self.width}x{self.height} or frame rate {self.frame_rate}")
        if not FOV_RANGE.minimum <= self.fov_deg <= FOV_RANGE.maximum:
            raise ValueError(f"project: fov {self.fov_deg} outside [{FOV_RANGE.minimum}, {FOV_RANGE.maximum}] degrees")

    @property
    def num_frames(self) -> int:
        return sum(orbit.frames for orbit in self.orbits)


def orbit_positions(target: SpherePoint, orbit: OrbitSpec) -> list[SpherePoint]:
    """Camera positions of one orbit around `target`."""
    altitude = target.altitude + orbit.height_m
    return [point_at_bearing(target, float(b), orbit.radius_m, altitude) for b in orbit.bearings_deg()]


def planned_positions(spec: EspProjectSpec) -> list[SpherePoint]:
    """Camera positions of every frame, orbit after orbit."""
    return [p for orbit in spec.orbits for p in orbit_positions(spec.target, orbit)]


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def _keyframes(times: list[float], values: list[float]) -> list[dict]:
    return [{"time": t, "value": v, "transitionIn": dict(LINEAR_TRANSITION), "transitionOut": dict(LINEAR_TRANSITION)}
            for t, v in zip(times, values)]


def _leaf(kind: str, value_range: ValueRange, times: list[float], values: list[float]) -> dict:
    """One animated attribute: its range, its value at frame 0 and its keyframes."""
    return {"type": kind, "value": {**value_range.to_json(), "relative": values[0]},
            "keyframes": _keyframes(times, values), "visible": True}


def _static_leaf(kind: str, value_range: ValueRange, relative: float) -> dict:
    """An attribute without keyframes (track points)."""
    return {"type": kind, "value": {**value_range.to_json(), "relative": relative}, "visible": True}


def _group(kind: str, value_range: tuple[float, float], leaves: list[dict]) -> dict:
    """A locked lon/lat/alt group (`position` or `poi`)."""
    return {"type": kind, "value": {"maxValueRange": value_range[1], "minValueRange": value_range[0], "relative": 0},
            "visible": True, "attributesLocked": True, "attributes": leaves}


def _camera_group(spec: EspProjectSpec, positions: list[SpherePoint], times: list[float]) -> dict:
    """cameraGroup: per-frame position and heading/tilt, the target on the look-at point, the lens."""
    log = spec.logarithmic
    angles = [heading_tilt_of(p, look_at_rotation(p, spec.target)) for p in positions]
    position = _group("position", POSITION_GROUP_RANGE, [
        _leaf("longitude", LONGITUDE_RANGE, times, [LONGITUDE_RANGE.encode(p.longitude) for p in positions]),
        _leaf("latitude", LATITUDE_RANGE, times, [LATITUDE_RANGE.encode(p.latitude) for p in positions]),
        _leaf("altitude", ALTITUDE_RANGE, times,
              [encode_altitude(p.altitude, log, f"camera {i}") for i, p in enumerate(positions)]),
    ])
    rotation = {"type": "cameraRotationGroup", "attributes": [
        _leaf("rotationX", HEADING_RANGE, times, [HEADING_RANGE.encode(h) for h, _ in angles]),
        _leaf("rotationY", TILT_RANGE, times, [TILT_RANGE.encode(t) for _, t in angles]),
    ]}
    poi = _group("poi", POI_GROUP_RANGE, [
        _leaf("longitudePOI", LONGITUDE_RANGE, [0], [LONGITUDE_RANGE.encode(spec.target.longitude)]),
        _leaf("latitudePOI", LATITUDE_RANGE, [0], [LATITUDE_RANGE.encode(spec.target.latitude)]),
        _leaf("altitudePOI", ALTITUDE_RANGE, [0], [encode_altitude(spec.target.altitude, log, "target")]),
    ])
    target = {"type": "cameraTargetEffect", "attributes": [poi, _leaf("influence", UNIT_RANGE, [0], [1])],
              "visible": True}
    lens = {"type": "cameraLensGroup", "attributes": [_leaf("fov", FOV_RANGE, [0], [FOV_RANGE.encode(spec.fov_deg)])]}
    return {"type": "cameraGroup", "attributes": [{"type": "cameraPositionGroup", "attributes": [position]},
                                                  rotation, target, lens]}


def _track_point(spec: EspProjectSpec) -> dict:
    """The look-at point as the export's first track point (and Local origin)."""
    t = spec.target
    leaves = [_static_leaf("longitude", LONGITUDE_RANGE, LONGITUDE_RANGE.encode(t.longitude)),
              _static_leaf("latitude", LATITUDE_RANGE, LATITUDE_RANGE.encode(t.latitude)),
              _static_leaf("altitude", ALTITUDE_RANGE, encode_altitude(t.altitude, spec.logarithmic, "target"))]
    position = {"type": "position", "value": {"maxValueRange": POSITION_GROUP_RANGE[1],
                                              "minValueRange": POSITION_GROUP_RANGE[0]},
                "visible": True, "attributesLocked": True, "attributes": leaves}
    return {"name": spec.target_name, "color": TRACK_POINT_COLOR, "visible": True, "position": position,
            "isOrigin": True}


def _json_number(value: float) -> float | int:
    """Integral values as JSON integers, as GES writes them (30, not 30.0)."""
    return int(value) if float(value).is_integer() else value


def build_esp(spec: EspProjectSpec) -> dict:
    """The .esp project (a JSON-ready dict) of `spec`: one keyframe per frame, frame i = camera i."""
    positions = planned_positions(spec)
    last = len(positions) - 1
    times = [i / last for i in range(len(positions))]
    scene = {
        "worldType": "earth",
        "animationModel": {"roving": False, "logarithmic": spec.logarithmic, "groupedPosition": True},
        "duration": last,
        "attributes": [_camera_group(spec, positions, times),
                       {"type": "environmentGroup",
                        "attributes": [{"type": "planet", "value": {"world": "earth"}, "visible": True}]}],
        "cameraExport": {"trackPoints": [_track_point(spec)]},
    }
    return {
        "modelVersion": ESP_MODEL_VERSION,
        "settings": {"name": spec.name, "frameRate": _json_number(spec.frame_rate),
                     "dimensions": {"width": spec.width, "height": spec.height},
                     "duration": last, "timeFormat": "frames"},
        "scenes": [scene],
        "playbackManager": {"range": {"start": 0, "end": last}},
    }


def esp_text(spec: EspProjectSpec) -> str:
    """The .esp file's text: compact JSON like GES writes, fixed key order (deterministic)."""
    return json.dumps(build_esp(spec), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def write_esp(path: Path | str, spec: EspProjectSpec) -> Path:
    """Write the project of `spec` to `path` atomically."""
    path = Path(path)
    write_text_atomic(path, esp_text(spec))
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Reading and decoding


@dataclasses.dataclass(frozen=True)
class EspCamera:
    """The camera of one keyframe time, in physical units."""

    frame: int
    time: float  # fraction of the scene duration
    position: SpherePoint
    heading_deg: float  # rotationX
    tilt_deg: float  # rotationY
    roll_deg: float  # rotationZ
    fov_deg: float | None  # None where the project does not set it (GES's default applies)
    target: SpherePoint | None  # the camera target's look-at point
    target_influence: float  # 0 without a target

    def rotation_view(self) -> np.ndarray:
        """ECEF-from-camera of the stored heading/tilt/roll (what GES renders without a target)."""
        return heading_tilt_rotation(self.position, self.heading_deg, self.tilt_deg, self.roll_deg)

    def target_view(self) -> np.ndarray | None:
        """ECEF-from-camera looking at the target (what GES renders at influence 1), or None without a target."""
        return None if self.target is None else look_at_rotation(self.position, self.target)

    def ecef_from_camera(self) -> np.ndarray:
        """The orientation GES renders: the target view at influence 1, the stored rotation at 0, a slerp between."""
        target = self.target_view()
        if target is None or self.target_influence <= 0.0:
            return self.rotation_view()
        if self.target_influence >= 1.0:
            return target
        ends = Rotation.from_matrix(np.stack([self.rotation_view(), target]))
        return Slerp([0.0, 1.0], ends)([self.target_influence]).as_matrix()[0]

    def cam2world(self, world: WorldFrame) -> np.ndarray:
        """4x4 camera-to-world (OpenCV axes) in `world`."""
        cam2world = np.eye(4)
        cam2world[:3, :3] = world.world_from_ecef_rotation @ self.ecef_from_camera()
        cam2world[:3, 3] = world.world_from_ecef(sphere_to_ecef(self.position))
        return cam2world

    def ges_rotation_deg(self) -> np.ndarray:
        """The `rotation` GES's tracking JSON reports for this camera (intrinsic XYZ Euler, camera -> ECEF)."""
        return rotation_deg_from_ecef_from_camera(self.ecef_from_camera())


@dataclasses.dataclass(frozen=True)
class EspProject:
    """A decoded .esp: settings, the camera of every keyframe time of the camera position, the track points."""

    name: str
    width: int
    height: int
    frame_rate: float
    duration_frames: int
    render_range: tuple[int, int]  # first and last rendered frame, both included
    logarithmic: bool
    cameras: list[EspCamera]
    track_points: list[tuple[str, SpherePoint]]


@dataclasses.dataclass(frozen=True)
class _Track:
    """One leaf attribute: normalised keyframes and static value, and how to make them physical."""

    times: np.ndarray
    values: np.ndarray
    static: float | None
    to_physical: Any  # callable: normalised -> physical

    def at(self, time: float) -> float | None:
        """Physical value at `time` (keyframes interpolated linearly, held beyond the ends), else the static value."""
        if self.times.size:
            return float(self.to_physical(float(np.interp(time, self.times, self.values))))
        return None if self.static is None else float(self.to_physical(self.static))

    @property
    def key_times(self) -> list[float]:
        return [float(t) for t in self.times]


def _children(node: dict) -> list[dict]:
    attributes = node.get("attributes")
    return [a for a in attributes if isinstance(a, dict)] if isinstance(attributes, list) else []


def _walk(node: dict) -> Iterator[dict]:
    for child in _children(node):
        yield child
        yield from _walk(child)


def _find(node: dict | None, kind: str) -> dict | None:
    """The first attribute of type `kind` below `node`."""
    if node is None:
        return None
    return next((a for a in _walk(node) if a.get("type") == kind), None)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EspError(f"{where}: not a finite number ({value!r})")
    return float(value)


def _track(leaf: dict | None, where: str, log_default: bool = False) -> _Track | None:
    """Parse a leaf attribute (None if absent)."""
    if leaf is None:
        return None
    kind = leaf.get("type", "?")
    where = f"{where} '{kind}'"
    value = leaf.get("value") if isinstance(leaf.get("value"), dict) else {}
    if "minValueRange" in value and "maxValueRange" in value:
        value_range = ValueRange(_number(value["minValueRange"], where), _number(value["maxValueRange"], where))
    elif kind in DEFAULT_RANGES:
        value_range = DEFAULT_RANGES[kind]
    else:
        raise EspError(f"{where}: no value range")
    if kind.startswith("altitude"):
        logarithmic = bool(value.get("logarithmic", log_default))
        to_physical = lambda r: decode_altitude(r, logarithmic, value_range)  # noqa: E731
    else:
        to_physical = value_range.decode
    keyframes = leaf.get("keyframes") or []
    if not isinstance(keyframes, list):
        raise EspError(f"{where}: 'keyframes' is not a list")
    try:
        pairs = sorted((_number(k["time"], where), _number(k["value"], where)) for k in keyframes)
    except (KeyError, TypeError) as exc:
        raise EspError(f"{where}: keyframe without time/value ({exc!r})") from exc
    static = _number(value["relative"], where) if "relative" in value else None
    return _Track(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]), static, to_physical)


def _point_tracks(group: dict | None, suffix: str, where: str, logarithmic: bool) -> list[_Track | None]:
    """The longitude/latitude/altitude tracks (suffix '' for the camera, 'POI' for the target) below `group`."""
    return [_track(_find(group, name + suffix), where, logarithmic) for name in ("longitude", "latitude", "altitude")]


def _point_at(tracks: list[_Track | None], time: float) -> SpherePoint | None:
    values = [None if t is None else t.at(time) for t in tracks]
    return None if any(v is None for v in values) else SpherePoint(values[1], values[0], values[2])


def _value_at(track: _Track | None, time: float, default: float | None) -> float | None:
    value = None if track is None else track.at(time)
    return default if value is None else value


def _track_points(scene: dict, where: str, logarithmic: bool) -> list[tuple[str, SpherePoint]]:
    points = []
    for i, tp in enumerate((scene.get("cameraExport") or {}).get("trackPoints") or []):
        position = tp.get("position") if isinstance(tp, dict) else None
        point = _point_at(_point_tracks(position, "", f"{where}: trackPoints[{i}]", logarithmic), 0.0)
        if point is None:
            raise EspError(f"{where}: trackPoints[{i}] lacks longitude/latitude/altitude")
        points.append((str(tp.get("name", f"Track Point {i + 1}")), point))
    return points


def parse_esp(data: Any, source: str = "<esp>") -> EspProject:
    """Decode a loaded .esp project; `source` names the file in error messages."""
    if not isinstance(data, dict):
        raise EspError(f"{source}: top level is not a JSON object")
    settings = data.get("settings")
    scenes = data.get("scenes")
    if not isinstance(settings, dict) or not isinstance(scenes, list) or not scenes or not isinstance(scenes[0], dict):
        raise EspError(f"{source}: missing 'settings' or 'scenes'")
    scene = scenes[0]
    try:
        duration = int(scene.get("duration", settings["duration"]))
        width, height = int(settings["dimensions"]["width"]), int(settings["dimensions"]["height"])
        frame_rate = float(settings.get("frameRate", 30))
    except (KeyError, TypeError, ValueError) as exc:
        raise EspError(f"{source}: missing or malformed settings ({exc!r})") from exc
    logarithmic = bool((scene.get("animationModel") or {}).get("logarithmic", False))
    camera_group = _find(scene, "cameraGroup")
    if camera_group is None:
        raise EspError(f"{source}: no 'cameraGroup'")
    position = _point_tracks(_find(camera_group, "cameraPositionGroup"), "", source, logarithmic)
    if any(t is None for t in position):
        raise EspError(f"{source}: the camera position lacks longitude, latitude or altitude")
    rotation_group = _find(camera_group, "cameraRotationGroup")
    heading, tilt, roll = (_track(_find(rotation_group, k), source) for k in ("rotationX", "rotationY", "rotationZ"))
    target_group = _find(camera_group, "cameraTargetEffect")
    target = _point_tracks(target_group, "POI", source, logarithmic)
    influence = _track(next((a for a in _children(target_group or {}) if a.get("type") == "influence"), None), source)
    enabled = _track(next((a for a in _children(target_group or {}) if a.get("type") == "enabled"), None), source)
    fov = _track(_find(_find(camera_group, "cameraLensGroup"), "fov"), source)

    times = sorted({t for track in position for t in track.key_times}) or [0.0]
    cameras = []
    for time in times:
        look_at = _point_at(target, time)
        weight = 0.0 if look_at is None else _value_at(enabled, time, 1.0) * _value_at(influence, time, 1.0)
        cameras.append(EspCamera(
            frame=int(round(time * duration)), time=time, position=_point_at(position, time),
            heading_deg=_value_at(heading, time, 0.0), tilt_deg=_value_at(tilt, time, 0.0),
            roll_deg=_value_at(roll, time, 0.0), fov_deg=_value_at(fov, time, None),
            target=look_at, target_influence=float(weight)))
    playback = ((data.get("playbackManager") or {}).get("range")) or {}
    render_range = (int(playback.get("start", 0)), int(playback.get("end", duration)))
    return EspProject(str(settings.get("name", Path(source).stem)), width, height, frame_rate, duration, render_range,
                      logarithmic, cameras, _track_points(scene, source, logarithmic))


def read_esp(path: Path | str) -> EspProject:
    """Load and decode a .esp file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EspError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EspError(f"{path}: malformed JSON ({exc})") from exc
    return parse_esp(data, str(path))


# ----------------------------------------------------------------------------------------------------------------------
# Scene geolocations (MegaDepth scene id -> latitude, longitude[, altitude])


@dataclasses.dataclass(frozen=True)
class Geolocation:
    """Where a scene is: latitude/longitude in degrees, altitude (GES metres) if known."""

    latitude: float
    longitude: float
    altitude: float | None = None


_COLUMN_NAMES = {"scene_id": ("scene_id", "scene"), "lat": ("lat", "latitude"), "lon": ("lon", "longitude"),
                 "alt": ("alt", "altitude")}


def normalize_scene_id(scene_id: Any) -> str:
    """MegaDepth scene ids are 4-digit strings: '1', 1 and '0001' are the same scene."""
    text = str(scene_id).strip()
    return text.zfill(4) if text.isdigit() else text


def _geolocation(lat: Any, lon: Any, alt: Any, where: str) -> Geolocation:
    try:
        latitude, longitude = float(lat), float(lon)
        altitude = None if alt is None or str(alt).strip() == "" else float(alt)
    except (TypeError, ValueError) as exc:
        raise EspError(f"{where}: latitude/longitude/altitude must be numbers ({exc})") from exc
    if not (math.isfinite(latitude) and math.isfinite(longitude)) or not (-90 < latitude < 90 and -180 <= longitude <= 180):
        raise EspError(f"{where}: latitude {latitude} / longitude {longitude} out of range")
    if altitude is not None and not math.isfinite(altitude):
        raise EspError(f"{where}: altitude {altitude} is not finite")
    return Geolocation(latitude, longitude, altitude)


def _column(fieldnames: list[str], key: str) -> str | None:
    lowered = {name.strip().lower(): name for name in fieldnames}
    return next((lowered[alias] for alias in _COLUMN_NAMES[key] if alias in lowered), None)


def _read_geolocations_csv(text: str, source: str) -> dict[str, Geolocation]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    columns = {key: _column(reader.fieldnames or [], key) for key in _COLUMN_NAMES}
    missing = [key for key in ("scene_id", "lat", "lon") if columns[key] is None]
    if missing:
        raise EspError(f"{source}: CSV header lacks column(s) {', '.join(missing)} (expected scene_id,lat,lon[,alt])")
    out: dict[str, Geolocation] = {}
    for row_number, row in enumerate(reader, start=2):
        where = f"{source}: row {row_number}"
        scene_id = normalize_scene_id(row.get(columns["scene_id"]) or "")
        if not scene_id:
            raise EspError(f"{where}: empty scene id")
        if scene_id in out:
            raise EspError(f"{where}: scene {scene_id} listed twice")
        alt = row.get(columns["alt"]) if columns["alt"] else None
        out[scene_id] = _geolocation(row.get(columns["lat"]), row.get(columns["lon"]), alt, where)
    return out


def _read_geolocations_json(text: str, source: str) -> dict[str, Geolocation]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EspError(f"{source}: malformed JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise EspError(f"{source}: expected an object mapping scene id -> location")
    out: dict[str, Geolocation] = {}
    for key, entry in data.items():
        scene_id, where = normalize_scene_id(key), f"{source}: scene {key}"
        if scene_id in out:
            raise EspError(f"{where}: scene {scene_id} listed twice")
        if isinstance(entry, list) and len(entry) in (2, 3):
            out[scene_id] = _geolocation(entry[0], entry[1], entry[2] if len(entry) == 3 else None, where)
        elif isinstance(entry, dict):
            lat, lon, alt = (next((entry[a] for a in _COLUMN_NAMES[k] if a in entry), None) for k in ("lat", "lon", "alt"))
            if lat is None or lon is None:
                raise EspError(f"{where}: needs 'lat' and 'lon'")
            out[scene_id] = _geolocation(lat, lon, alt, where)
        else:
            raise EspError(f"{where}: expected {{\"lat\", \"lon\"[, \"alt\"]}} or [lat, lon(, alt)]")
    return out


def read_geolocations(path: Path | str) -> dict[str, Geolocation]:
    """Scene geolocations from a CSV (header scene_id,lat,lon[,alt]; '#' comment lines allowed) or a JSON object
    ({"0001": {"lat": .., "lon": .., "alt": ..}} or {"0001": [lat, lon, alt]}); the format follows the suffix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise EspError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise EspError(f"{path}: not UTF-8 text ({exc})") from exc
    if path.suffix.lower() == ".json":
        locations = _read_geolocations_json(text, str(path))
    else:
        locations = _read_geolocations_csv(text, str(path))
    if not locations:
        raise EspError(f"{path}: no scene listed")
    return locations


def scene_geolocation(scene_id: str, path: Path | str) -> Geolocation:
    """The geolocation of one MegaDepth scene from a geolocations file."""
    locations = read_geolocations(path)
    key = normalize_scene_id(scene_id)
    if key not in locations:
        raise EspError(f"{path}: scene {key} not listed ({len(locations)} scenes in the file)")
    return locations[key]
