"""Google Earth Studio (GES) 3D-camera-tracking JSON: parsing, writing, and decoding into metric cameras.

Conventions (verified on real exports, see ../shared/README.md):
- `rotation` (x, y, z) in degrees is the intrinsic X-Y-Z Euler rotation taking camera axes to ECEF axes, for the
  OpenCV/COLMAP camera (x right, y down, z forward): no axis flip.
- focal length f = (H / 2) / tan(fovVertical / 2) pixels; principal point at the image centre; square pixels; no distortion.
- Global export: `position` is ECEF on the GES sphere (see geodesy). Local export: `position` is
  sphere(camera) - sphere(origin), axes parallel to ECEF; it may lack `coordinate`.
- `cameraFrames` has numFrames + 1 entries, one per rendered frame `<name>_000.jpeg` ... (inclusive).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pycolmap
from scipy.spatial.transform import Rotation

from aerialmd.geometry.camera import matrix_to_rigid, opencv_intrinsics
from aerialmd.geometry.geodesy import GES_SPHERE_RADIUS_M, SpherePoint, WorldFrame, ecef_to_sphere, sphere_to_ecef

# The "Google Earth" logo burned into every rendered frame, as fractions (x0, y0, x1, y1) of the image size, measured on
# the real 1920x1080 GESblender frames (logo at x 864-1055, y 903-938) with a margin. Not part of the scene.
GES_ATTRIBUTION_BOX = (0.43, 0.82, 0.57, 0.885)
GES_EULER_ORDER = "XYZ"  # intrinsic rotations, camera axes -> ECEF axes
GLOBAL_POSITION_MIN_NORM_M = 0.5 * GES_SPHERE_RADIUS_M  # Global positions lie near the sphere, Local ones near 0


class GESFormatError(ValueError):
    """A GES JSON file that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class GESCameraFrame:
    """One entry of `cameraFrames`, as exported."""

    position: np.ndarray  # (3,) metres, ECEF (Global) or ECEF-parallel offset from the origin (Local)
    rotation_deg: np.ndarray  # (3,) intrinsic XYZ Euler angles, camera -> ECEF axes
    fov_vertical_deg: float
    coordinate: SpherePoint | None


@dataclasses.dataclass(frozen=True)
class GESTrackPoint:
    name: str
    position: np.ndarray


@dataclasses.dataclass(frozen=True)
class GESExport:
    """A parsed 3D-camera-tracking export."""

    name: str
    width: int
    height: int
    frame_rate: float
    num_frames: int
    duration_seconds: float
    frames: list[GESCameraFrame]
    track_points: list[GESTrackPoint]

    @property
    def is_global(self) -> bool:
        """Global exports have ECEF positions; Local ones are offsets from a nearby origin."""
        return float(np.linalg.norm(self.frames[0].position)) > GLOBAL_POSITION_MIN_NORM_M


def _vector(entry: dict, key: str, where: str) -> np.ndarray:
    try:
        value = np.array([float(entry[key][axis]) for axis in "xyz"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GESFormatError(f"{where}: missing or malformed '{key}' ({exc!r})") from exc
    if not np.all(np.isfinite(value)):
        raise GESFormatError(f"{where}: non-finite '{key}' {value.tolist()}")
    return value


def _coordinate(entry: dict) -> SpherePoint | None:
    coordinate = entry.get("coordinate")
    if not isinstance(coordinate, dict) or "latitude" not in coordinate:
        return None
    return SpherePoint(float(coordinate["latitude"]), float(coordinate["longitude"]), float(coordinate["altitude"]))


def _camera_frame(entry: dict, where: str) -> GESCameraFrame:
    fov = entry.get("fovVertical")
    if not isinstance(fov, (int, float)) or not math.isfinite(fov) or not 0 < fov < 180:
        raise GESFormatError(f"{where}: missing or invalid 'fovVertical' ({fov!r})")
    return GESCameraFrame(_vector(entry, "position", where), _vector(entry, "rotation", where), float(fov),
                          _coordinate(entry))


def parse_ges_json(data: dict, source: str = "<json>") -> GESExport:
    """Validate and parse a loaded GES tracking JSON; `source` names the file in error messages."""
    for key in ("width", "height", "cameraFrames"):
        if key not in data:
            raise GESFormatError(f"{source}: missing key '{key}'")
    frames_raw = data["cameraFrames"]
    if not isinstance(frames_raw, list) or not frames_raw:
        raise GESFormatError(f"{source}: 'cameraFrames' is empty or not a list")
    frames = [_camera_frame(entry, f"{source}: cameraFrames[{i}]") for i, entry in enumerate(frames_raw)]
    track_points = [GESTrackPoint(str(tp.get("name", f"Track Point {i + 1}")), _vector(tp, "position", f"{source}: trackPoints[{i}]"))
                    for i, tp in enumerate(data.get("trackPoints") or [])]
    width, height = int(data["width"]), int(data["height"])
    if width <= 0 or height <= 0:
        raise GESFormatError(f"{source}: invalid image size {width}x{height}")
    return GESExport(
        name=str(data.get("name", Path(source).stem)),
        width=width,
        height=height,
        frame_rate=float(data.get("frameRate", 30)),
        num_frames=int(data.get("numFrames", len(frames) - 1)),
        duration_seconds=float(data.get("durationSeconds", 0.0)),
        frames=frames,
        track_points=track_points,
    )


def read_ges_json(path: Path | str) -> GESExport:
    """Load and parse a GES tracking JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise GESFormatError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GESFormatError(f"{path}: malformed JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise GESFormatError(f"{path}: top level is not a JSON object")
    return parse_ges_json(data, str(path))


def focal_from_fov(fov_vertical_deg: float, height: int) -> float:
    """Focal length in pixels from GES's vertical field of view."""
    return (height / 2.0) / math.tan(math.radians(fov_vertical_deg) / 2.0)


def fov_from_focal(focal: float, height: int) -> float:
    """GES vertical field of view (degrees) of a focal length in pixels."""
    return math.degrees(2.0 * math.atan((height / 2.0) / focal))


def ecef_from_camera_rotation(rotation_deg: np.ndarray) -> np.ndarray:
    """3x3 rotation taking OpenCV camera axes to ECEF axes."""
    return Rotation.from_euler(GES_EULER_ORDER, rotation_deg, degrees=True).as_matrix()


def rotation_deg_from_ecef_from_camera(R_ecef_from_cam: np.ndarray) -> np.ndarray:
    """GES Euler angles (degrees) of a camera-to-ECEF rotation."""
    return Rotation.from_matrix(R_ecef_from_cam).as_euler(GES_EULER_ORDER, degrees=True)


def default_world_frame(export: GESExport, origin: SpherePoint | None = None) -> WorldFrame:
    """The world frame of an export: ENU at `origin` if given, else at the first track point (Global), else (Local)
    the export's own ECEF-parallel axes; a Global export without track points uses the point on the sphere under
    the mean camera position."""
    if origin is not None:
        return WorldFrame.enu(origin)
    if not export.is_global:
        return WorldFrame.local_ecef_axes()
    if export.track_points:
        return WorldFrame.enu(ecef_to_sphere(export.track_points[0].position))
    below = ecef_to_sphere(np.mean([f.position for f in export.frames], axis=0))
    return WorldFrame.enu(SpherePoint(below.latitude, below.longitude, 0.0))


def frame_position_ecef(export: GESExport, frame: GESCameraFrame, world: WorldFrame) -> np.ndarray:
    """ECEF position of a camera: Global positions are ECEF; Local ones are offsets from the world's origin."""
    if export.is_global:
        return frame.position
    return frame.position + world.origin_ecef


@dataclasses.dataclass(frozen=True)
class DecodedCamera:
    """A GES frame as a metric pinhole camera in the world frame (conventions in aerialmd.geometry.camera)."""

    camera: pycolmap.Camera  # PINHOLE, COLMAP pixel convention
    cam_from_world: pycolmap.Rigid3d

    @property
    def intrinsics_opencv(self) -> np.ndarray:
        return opencv_intrinsics(self.camera)

    @property
    def center(self) -> np.ndarray:
        return self.cam_from_world.inverse().translation


def ges_camera_model(fov_vertical_deg: float, width: int, height: int) -> pycolmap.Camera:
    """PINHOLE camera of a GES frame rendered at width x height (principal point at the image centre)."""
    f = focal_from_fov(fov_vertical_deg, height)
    return pycolmap.Camera(model="PINHOLE", width=width, height=height, params=[f, f, width / 2.0, height / 2.0])


def decode_cameras(export: GESExport, world: WorldFrame, image_size: tuple[int, int] | None = None) -> list[DecodedCamera]:
    """Metric cameras of every frame in `world`; `image_size` (W, H) when frames were rendered at another size."""
    width, height = image_size or (export.width, export.height)
    decoded = []
    for frame in export.frames:
        R_world_from_cam = world.world_from_ecef_rotation @ ecef_from_camera_rotation(frame.rotation_deg)
        center_world = world.world_from_ecef(frame_position_ecef(export, frame, world))
        cam2world = np.eye(4)
        cam2world[:3, :3] = R_world_from_cam
        cam2world[:3, 3] = center_world
        decoded.append(DecodedCamera(ges_camera_model(frame.fov_vertical_deg, width, height),
                                     matrix_to_rigid(cam2world).inverse()))
    return decoded


def encode_camera_frame(cam2world_enu: np.ndarray, fov_vertical_deg: float, world: WorldFrame) -> dict:
    """A Global-format `cameraFrames` entry for a camera given in an ENU world frame (used by the sample scene)."""
    center_ecef = world.ecef_from_world(cam2world_enu[:3, 3])
    R_ecef_from_cam = world.world_from_ecef_rotation.T @ cam2world_enu[:3, :3]
    rotation = rotation_deg_from_ecef_from_camera(R_ecef_from_cam)
    coordinate = ecef_to_sphere(center_ecef)
    return {
        "position": dict(zip("xyz", map(float, center_ecef))),
        "rotation": dict(zip("xyz", map(float, rotation))),
        "coordinate": coordinate.to_dict(),
        "fovVertical": float(fov_vertical_deg),
    }


def encode_track_point(name: str, point: SpherePoint) -> dict:
    """A Global-format `trackPoints` entry (the nested `coordinate` block as GES writes it)."""
    ranges = {"longitude": (-180.0, 180.0), "latitude": (-89.9999, 89.9999), "altitude": (1.0, 65117481.0)}
    values = {"longitude": point.longitude, "latitude": point.latitude, "altitude": max(point.altitude, 1.0)}
    attributes = [{"type": key, "value": {"maxValueRange": hi, "minValueRange": lo,
                                          "relative": (values[key] - lo) / (hi - lo)}, "visible": True}
                  for key, (lo, hi) in ranges.items()]
    return {
        "position": dict(zip("xyz", map(float, sphere_to_ecef(point)))),
        "name": name,
        "coordinate": {"name": name, "color": "#148fbc", "visible": True,
                       "position": {"type": "position", "value": {"maxValueRange": 71488366.22893658, "minValueRange": 0},
                                    "visible": True, "attributesLocked": True, "attributes": attributes},
                       "isOrigin": False},
        "visible": True,
    }
