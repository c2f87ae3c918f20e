"""Stage 2: Google Earth Studio renders -> per-scene frames and metric cameras.

Input, per scene, in `<data_root>/downloaded_data/`: `<scene>.json` (3D camera tracking) and either `<scene>.mp4` or an
image-sequence render `<scene>/footage/<name>_NNN.jpeg` (its json may also sit at `<scene>/<scene>.json`).
Output, per scene, in `<data_root>/data/<scene>/` (written under a temporary name and moved in when complete,
ge_cameras.json last; a redo replaces these entries only, later stages' outputs in the folder are kept):
    footage/<scene>_NNN.jpeg     frames, numbered from 000 like GES's image-sequence render
    <scene>.json                 the tracking JSON with cameraFrames aligned one-to-one with the frames
    ge_cameras.json              per frame: OpenCV intrinsics and metric cam2world in the world frame it describes
    sparse_ge/{cameras,images,points3D}.txt   the same cameras as a COLMAP model (PINHOLE, cam_from_world, no points)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pycolmap

from aerialmd.atomic import atomic_entries
from aerialmd.formats.ges_json import (
    DecodedCamera,
    GESExport,
    GESFormatError,
    decode_cameras,
    default_world_frame,
    read_ges_json,
)
from aerialmd.formats.video import extract_frames, list_image_sequence
from aerialmd.geometry.camera import cam2world_from_cam_from_world
from aerialmd.geometry.geodesy import SpherePoint, WorldFrame
from aerialmd.layout import CAMERAS_FILE, FOOTAGE_DIR, SCENES_DIR, SPARSE_GE_DIR, DataRoot
from aerialmd.run.markers import SETTINGS_KEY, is_finished
from aerialmd.run.scenes import Shard, load_scene_list, run_per_scene, select_scenes

STAGE = "preprocess_ge"



class SceneInputError(RuntimeError):
    """A scene whose inputs are missing or inconsistent; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class GEInputs:
    scene: str
    json_path: Path
    video: Path | None
    footage: Path | None


@dataclasses.dataclass(frozen=True)
class GEResult:
    scene: str
    num_frames: int
    message: str


def find_inputs(data_root: Path, scene: str) -> GEInputs | None:
    """The scene's tracking JSON and its video or image sequence, or None when nothing was downloaded for it."""
    root = DataRoot(data_root)
    video, footage, json_candidates = root.video(scene), root.image_sequence(scene), root.tracking_json_candidates(scene)
    json_path = next((p for p in json_candidates if p.is_file()), None)
    has_frames = video.exists() or footage.is_dir()
    if json_path is None and not has_frames:
        return None
    if json_path is None:
        raise SceneInputError(f"{json_candidates[0]}: tracking JSON not found")
    if not has_frames:
        raise SceneInputError(f"{video}: no video (nor image sequence {footage})")
    return GEInputs(scene, json_path, video if video.exists() else None, footage if not video.exists() else None)


def copy_image_sequence(footage: Path, out_dir: Path, prefix: str) -> list[Path]:
    """Copy an image-sequence render, renumbered `<prefix>_NNN.jpeg` from 000 in frame order."""
    frames = list_image_sequence(footage)
    if not frames:
        raise SceneInputError(f"{footage}: no frames")
    digits = max(3, len(str(len(frames) - 1)))
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for index, frame in enumerate(frames):
        target = out_dir / f"{prefix}_{index:0{digits}d}{frame.suffix.lower()}"
        shutil.copyfile(frame, target)
        outputs.append(target)
    return outputs


def align_frames(frames: list[Path], export: GESExport, source: Path) -> tuple[list[Path], GESExport, str]:
    """Match frames to cameraFrames one-to-one: equal counts pass, an off-by-one drops the unmatched last entry."""
    n_frames, n_cameras = len(frames), len(export.frames)
    if n_frames == n_cameras:
        return frames, export, f"{n_frames} frames"
    if n_frames == n_cameras - 1:
        message = f"{n_frames} frames for {n_cameras} cameraFrames: dropped the last camera"
        return frames, dataclasses.replace(export, frames=export.frames[:n_frames], num_frames=n_frames - 1), message
    if n_frames == n_cameras + 1:
        frames[-1].unlink()
        return frames[:-1], export, f"{n_frames} frames for {n_cameras} cameraFrames: dropped the last frame"
    raise SceneInputError(f"{source}: {n_cameras} cameraFrames but {n_frames} frames rendered")


def aligned_json(json_path: Path, export: GESExport) -> dict:
    """The original tracking JSON with cameraFrames cut to the aligned frames."""
    data = json.loads(json_path.read_text())
    data["cameraFrames"] = data["cameraFrames"][: len(export.frames)]
    data["numFrames"] = len(export.frames) - 1
    return data


def cameras_document(scene: str, export: GESExport, world: WorldFrame, frames: list[Path],
                     cameras: list[DecodedCamera], alignment: str) -> dict:
    """The ge_cameras.json content: world frame, conventions and every frame's metric camera."""
    return {
        "scene": scene,
        "coordinate_space": "global" if export.is_global else "local",
        "frame": world.describe(),
        "conventions": "cam2world: camera-to-world 4x4 (OpenCV camera: x right, y down, z forward), metres; "
                       "intrinsics: 3x3, OpenCV pixel centres (COLMAP's cx, cy minus 0.5)",
        "alignment": alignment,
        "images": [{
            "name": frame.name,
            "width": cam.camera.width,
            "height": cam.camera.height,
            "fov_vertical_deg": ges_frame.fov_vertical_deg,
            "intrinsics": cam.intrinsics_opencv.tolist(),
            "cam2world": cam2world_from_cam_from_world(cam.cam_from_world).tolist(),
        } for frame, cam, ges_frame in zip(frames, cameras, export.frames)],
    }


def write_colmap_cameras(out_dir: Path, frames: list[Path], cameras: list[DecodedCamera]) -> None:
    """The known aerial cameras as a COLMAP text model without points (one camera per frame: GES can zoom)."""
    model = pycolmap.Reconstruction()
    for image_id, (frame, cam) in enumerate(zip(frames, cameras), start=1):
        camera = pycolmap.Camera(model=cam.camera.model, width=cam.camera.width, height=cam.camera.height,
                                 params=cam.camera.params, camera_id=image_id)
        model.add_camera_with_trivial_rig(camera)
        model.add_image_with_trivial_frame(pycolmap.Image(name=frame.name, camera_id=image_id, image_id=image_id),
                                           cam.cam_from_world)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.write_text(str(out_dir))


def frame_size(frame: Path) -> tuple[int, int]:
    image = cv2.imread(str(frame), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SceneInputError(f"{frame}: unreadable frame")
    return image.shape[1], image.shape[0]


def check_aspect(export: GESExport, size: tuple[int, int], source: Path) -> None:
    """Frames may be rendered at another resolution than the JSON says, but not at another aspect ratio."""
    if abs(size[0] / size[1] - export.width / export.height) > 0.01:
        raise SceneInputError(f"{source}: frames are {size[0]}x{size[1]} but the JSON says {export.width}x{export.height}")


def preprocess_ge_scene(data_root: Path, scene: str, origin: SpherePoint | None = None, overwrite: bool = False,
                        workers: int | None = None, progress: bool = True) -> GEResult | None:
    """Extract frames and decode cameras of one scene; None when the scene has no download."""
    out_dir = data_root / SCENES_DIR / scene
    inputs = find_inputs(data_root, scene)
    if inputs is None:
        return None
    settings = {"origin": None if origin is None else origin.to_dict()}
    if not overwrite and is_finished(out_dir / CAMERAS_FILE, settings):
        return GEResult(scene, len(list_image_sequence(out_dir / FOOTAGE_DIR)), "already done (use --overwrite to redo)")
    try:
        export = read_ges_json(inputs.json_path)
    except GESFormatError as exc:
        raise SceneInputError(str(exc)) from exc
    with atomic_entries(out_dir, CAMERAS_FILE) as tmp:  # later stages' outputs in out_dir stay
        footage = tmp / FOOTAGE_DIR
        if inputs.video is not None:
            frames = extract_frames(inputs.video, footage, scene, workers=workers, progress=progress)
        else:
            frames = copy_image_sequence(inputs.footage, footage, scene)
        frames, export, alignment = align_frames(frames, export, inputs.video or inputs.footage)
        size = frame_size(frames[0])
        check_aspect(export, size, inputs.video or inputs.footage)
        world = default_world_frame(export, origin)
        cameras = decode_cameras(export, world, size)
        (tmp / f"{scene}.json").write_text(json.dumps(aligned_json(inputs.json_path, export), indent=1))
        document = {SETTINGS_KEY: settings, **cameras_document(scene, export, world, frames, cameras, alignment)}
        (tmp / CAMERAS_FILE).write_text(json.dumps(document, indent=1))
        write_colmap_cameras(tmp / SPARSE_GE_DIR, frames, cameras)
    return GEResult(scene, len(frames), alignment)


def read_ge_cameras(scene_dir: Path) -> dict:
    """Load a scene's ge_cameras.json, with cam2world and intrinsics as arrays."""
    document = json.loads((scene_dir / CAMERAS_FILE).read_text())
    for image in document["images"]:
        image["cam2world"] = np.array(image["cam2world"])
        image["intrinsics"] = np.array(image["intrinsics"])
    return document


def preprocess_ge(data_root: Path | str, scene_list: Path | str, scenes: list[str] | None = None,
                  origin: SpherePoint | None = None, overwrite: bool = False, workers: int | None = None,
                  shard: Shard | None = None) -> int:
    """Run stage 2 over the scene list (or the given scenes); returns the exit code (1 if any scene failed).

    Scenes of the list without a download are passed over silently; explicitly requested ones must exist."""
    data_root = Path(data_root)
    selected = select_scenes(load_scene_list(scene_list), scenes, shard)

    def process(scene: str) -> str | None:
        result = preprocess_ge_scene(data_root, scene, origin, overwrite, workers)
        if result is None and scenes:
            raise SceneInputError(f"{DataRoot(data_root).video(scene)}: no download for this scene")
        return None if result is None else f"{result.num_frames} frames ({result.message})"

    report = run_per_scene(STAGE, selected, process)
    print(report.summary(), flush=True)
    return report.exit_code()
