"""Writes the sample scene: a GES Global export (mp4 + JSON), a MegaDepth scene, a scene list and the ground truth.

Layout under `root` (see SamplePaths):
    downloaded_data/<scene>.mp4, <scene>.json          GES render + 3D camera tracking (Global, sphere conventions)
    megadepth/MegaDepth_v1_SfM/<scene>/sparse/manhattan/0/{cameras,images,points3D}.txt
    megadepth/phoenix/S6/zl548/MegaDepth_v1/<scene>/dense0/{imgs/<name>.jpg, depths/<stem>.h5}
    megadepth_image_list.npz                           scene list, format of datasets_preprocess/megadepth_image_list.npz
    ground_truth/<scene>/cameras.json                  metric cam2world (ENU) + OpenCV intrinsics of every image
    ground_truth/<scene>/depth/<image name>.exr        metric z-depth of every image (0 = sky)
    sample_scene.json                                  the config; its presence marks a complete sample
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pycolmap
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from aerialmd.atomic import atomic_dir
from aerialmd.formats.depth import write_depth_exr, write_depth_h5
from aerialmd.formats.ges_json import GES_ATTRIBUTION_BOX, encode_camera_frame, encode_track_point, focal_from_fov
from aerialmd.formats.video import write_video
from aerialmd.geometry.camera import cam_from_world_from_cam2world, intrinsics_matrix
from aerialmd.geometry.geodesy import SpherePoint, WorldFrame
from aerialmd.layout import (
    MEGADEPTH_DEPTHS_DIR,
    MEGADEPTH_IMAGES_DIR,
    DataRoot,
    megadepth_dense_dir,
    megadepth_sparse_dir,
)
from aerialmd.run.scenes import save_scene_list
from aerialmd.sample_scene.appearance import AppearanceGap, transients_in_view, with_transients
from aerialmd.sample_scene.render import Look, render
from aerialmd.sample_scene.textures import PAVEMENT, WALL, Grain, Texture, grain_detail
from aerialmd.sample_scene.viewpoints import Orbit, orbit_poses, pose_near_spot, street_pose, street_spot
from aerialmd.sample_scene.world import Box, TownShape, World, random_town
from aerialmd.stages.preprocess_megadepth import undistorted_intrinsics

MARKER_NAME = "sample_scene.json"
STREET_DETAIL_STREAM, WALL_DETAIL_STREAM = 1, 2  # the grains' random streams (surface_grain)
# Settings added since samples were first made, with the values that make the same files as before they existed: a
# sample whose marker lacks them is the one these values would make.
ADDED_SETTINGS = json.loads(json.dumps({
    "ground_spots": 0, "spot_spread_m": 2.0, "street_detail_texel_m": 0.0, "wall_detail_texel_m": 0.0,
    "town": dataclasses.asdict(TownShape()), "photo_distance_m": (35.0, 110.0),
    "gap": dataclasses.asdict(AppearanceGap.off())}))


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Size and randomness of the sample; the same config always gives the same files."""

    scene_id: str = "9000"
    seed: int = 0
    num_buildings: int = 7
    town: TownShape = TownShape()
    orbits: tuple[Orbit, ...] = (Orbit(30.0, 130.0, 16), Orbit(80.0, 180.0, 16), Orbit(180.0, 240.0, 16))
    aerial_size: tuple[int, int] = (640, 360)
    aerial_fov_deg: float = 40.0
    num_ground: int = 16
    # Ground photos come from a few popular spots, a few metres apart there: with them the photos sample viewpoints as
    # densely as real MegaDepth scenes do (evaluation.neighbour_distance_ratios; 0: each photo at a place of its own).
    ground_spots: int = 4
    spot_spread_m: float = 2.0
    photo_distance_m: tuple[float, float] = (35.0, 110.0)  # from a photo to the facade point it frames
    # Texel of the pavement grain on the ground (textures.PAVEMENT), what a street photo sees of the street in
    # front of it; 0: none (the ground's own texels, 0.3 m, are made for the aerial views).
    street_detail_texel_m: float = 0.02
    # Texel of the wall grain (textures.WALL) on every facade, what a photo a few metres from a wall sees of it; 0: none
    # (the facades' own 6 cm texels then show as flat blocks up close, where no window matching can work).
    wall_detail_texel_m: float = 0.01
    ground_long_side: int = 640
    # The Google Earth / tourist photo appearance gap (aerialmd.sample_scene.appearance); AppearanceGap.off(): none.
    gap: AppearanceGap = AppearanceGap()
    frame_rate: float = 30.0
    origin: SpherePoint = SpherePoint(48.85837, 2.29448, 35.0)  # Champ de Mars, Paris; the ground is at this altitude
    supersample: int = 2
    workers: int = 2

    @classmethod
    def tiny(cls, **overrides) -> "SampleConfig":
        """A small sample for fast tests: two dense arcs facing the landmark's photographed side."""
        base = dict(num_buildings=4, orbits=(Orbit(30.0, 120.0, 9, 120.0, 45.0), Orbit(90.0, 170.0, 9, 120.0, 45.0)),
                    aerial_size=(480, 270), num_ground=5, ground_long_side=480, ground_spots=0,
                    street_detail_texel_m=0.0, wall_detail_texel_m=0.0)
        return cls(**{**base, **overrides})

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def num_frames(self) -> int:
        return sum(o.frames for o in self.orbits)


# The samples run_pipeline.py and the benchmarks make by name, and the folder each lives in by default (one per size,
# so that both can be there: the full one is the benchmarks' and `run_pipeline.py --sample_size full`'s).
SAMPLE_SIZES = {"tiny": SampleConfig.tiny(), "full": SampleConfig()}
SAMPLE_ROOTS = {"tiny": Path("sample_data"), "full": Path("sample_data_full")}


@dataclasses.dataclass(frozen=True)
class SamplePaths:
    """Where every part of a sample lives."""

    root: Path
    scene_id: str

    @property
    def data_root(self) -> DataRoot:
        """The sample as a data root (its GES export, scene list and every stage's output)."""
        return DataRoot(self.root)

    @property
    def downloaded_dir(self) -> Path:
        return self.data_root.downloads

    @property
    def video(self) -> Path:
        return self.data_root.video(self.scene_id)

    @property
    def ges_json(self) -> Path:
        return self.data_root.tracking_json(self.scene_id)

    @property
    def megadepth_root(self) -> Path:
        return self.root / "megadepth"

    @property
    def sparse_dir(self) -> Path:
        return megadepth_sparse_dir(self.megadepth_root, self.scene_id, "0")

    @property
    def dense_dir(self) -> Path:
        return megadepth_dense_dir(self.megadepth_root, self.scene_id, "0")

    @property
    def scene_list(self) -> Path:
        return self.data_root.scene_list

    @property
    def ground_truth_dir(self) -> Path:
        return self.root / "ground_truth" / self.scene_id

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME


def sample_paths(root: Path | str, config: SampleConfig = SampleConfig()) -> SamplePaths:
    return SamplePaths(Path(root), config.scene_id)


@dataclasses.dataclass
class View:
    """One image to render: name, kind ('aerial' or 'ground'), size, OpenCV intrinsics, metric cam2world, how it sees
    the world (`look`) and what stands in it for this view alone (a photo's cars and people, with their textures)."""

    name: str
    kind: str
    width: int
    height: int
    K: np.ndarray
    cam2world: np.ndarray
    look: Look = Look()
    transients: tuple[tuple[Box, ...], tuple[Texture, ...]] = ((), ())


_WORLD: World | None = None  # shared with forked render workers


def _render_view(view: View, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    assert _WORLD is not None
    world = with_transients(_WORLD, *view.transients)
    return render(world, view.K, view.cam2world, view.width, view.height, supersample, view.look)


def render_views(world: World, views: list[View], supersample: int, workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """RGB and depth of every view, in parallel processes that share the world by forking."""
    global _WORLD
    _WORLD = world
    try:
        if workers <= 1:
            return [_render_view(v, supersample) for v in tqdm(views, desc="render sample", leave=False)]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            jobs = pool.map(_render_view, views, [supersample] * len(views))
            return list(tqdm(jobs, total=len(views), desc="render sample", leave=False))
    finally:
        _WORLD = None


def aerial_views(rng: np.random.Generator, config: SampleConfig) -> list[View]:
    width, height = config.aerial_size
    f = focal_from_fov(config.aerial_fov_deg, height)
    K = intrinsics_matrix(f, f, (width - 1) / 2, (height - 1) / 2)
    digits = max(3, len(str(config.num_frames - 1)))
    poses = orbit_poses(rng, config.orbits, target_height_m=12.0)
    look = config.gap.aerial_look()
    return [View(f"{config.scene_id}_{i:0{digits}d}.jpeg", "aerial", width, height, K, pose, look)
            for i, pose in enumerate(poses)]


def ground_cameras(rng: np.random.Generator, config: SampleConfig, world: World) -> list[tuple[View, pycolmap.Camera]]:
    """Street-level photos: a distorted SIMPLE_RADIAL camera as MegaDepth's SfM has it, and the undistorted view
    (intrinsics by the same rule the MegaDepth preprocessing applies) that is rendered as the dense image."""
    aspects = [(4, 3), (3, 4), (3, 2), (16, 9), (1, 1), (2, 3)]
    spots = [street_spot(rng, world, config.photo_distance_m) for _ in range(config.ground_spots)]
    out = []
    for _ in range(config.num_ground):
        a, b = aspects[rng.integers(len(aspects))]
        scale = config.ground_long_side / max(a, b)
        width, height = 2 * int(a * scale / 2), 2 * int(b * scale / 2)
        focal = max(width, height) / (2 * np.tan(np.radians(rng.uniform(50.0, 72.0)) / 2))
        params = [focal, width / 2 + rng.normal(0, 1.5), height / 2 + rng.normal(0, 1.5), rng.uniform(-0.04, 0.04)]
        camera = pycolmap.Camera(model="SIMPLE_RADIAL", width=width, height=height, params=params)
        name = f"{rng.integers(10**9, 10**10)}_{rng.bytes(5).hex()}_o.jpg"
        K = undistorted_intrinsics(camera, (width, height))
        pose = pose_near_spot(rng, world, spots[rng.integers(len(spots))], config.spot_spread_m) if spots else \
            street_pose(rng, world, config.photo_distance_m)
        out.append((View(name, "ground", width, height, K, pose), camera))
    return out


def with_photo_gap(config: SampleConfig, world: World, views: list[View]) -> list[View]:
    """The ground views with their own light and their own cars and people (config.gap)."""
    looks = config.gap.photo_looks(config.seed, len(views))
    out = []
    for index, (view, look) in enumerate(zip(views, looks)):
        fov_x = 2 * np.arctan(view.width / (2 * view.K[0, 0]))
        transients = transients_in_view(config.seed, index, world, view.cam2world, fov_x,
                                        config.gap.transients_per_photo)
        out.append(dataclasses.replace(view, look=look, transients=transients))
    return out


def random_similarity(rng: np.random.Generator) -> pycolmap.Sim3d:
    """An arbitrary SfM frame as MegaDepth has: random rotation, translation and scale (log-uniform 0.05-20)."""
    scale = float(np.exp(rng.uniform(np.log(0.05), np.log(20.0))))
    rotation = Rotation.random(random_state=np.random.RandomState(rng.integers(2**31))).as_matrix()
    return pycolmap.Sim3d(scale, pycolmap.Rotation3d(rotation), rng.normal(0, 20.0, 3))


def burn_attribution(rgb: np.ndarray) -> np.ndarray:
    """Draw the "Google Earth" logo where GES burns it into every frame."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = GES_ATTRIBUTION_BOX
    font_scale = (y1 - y0) * h / 40.0
    size, _ = cv2.getTextSize("Google Earth", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    org = (int((x0 + x1) / 2 * w - size[0] / 2), int((y0 + y1) / 2 * h + size[1] / 2))
    out = rgb.copy()
    cv2.putText(out, "Google Earth", org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), max(1, int(font_scale * 2)),
                cv2.LINE_AA)
    return out


def photo_look(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """Per-photo exposure, white balance and gamma, as different cameras produce."""
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
    gamma = rng.uniform(0.9, 1.1)
    out = np.clip((rgb / 255.0) ** gamma * gain, 0, 1)
    return (out * 255 + 0.5).astype(np.uint8)


def write_ges_export(out_dir: Path, config: SampleConfig, views: list[View], frames: list[np.ndarray]) -> None:
    world = WorldFrame.enu(config.origin)
    width, height = config.aerial_size
    export = {
        "name": config.scene_id,
        "width": width,
        "height": height,
        "frameRate": config.frame_rate,
        "numFrames": len(views) - 1,
        "durationSeconds": (len(views) - 1) / config.frame_rate,
        "cameraFrames": [encode_camera_frame(v.cam2world, config.aerial_fov_deg, world) for v in views],
        "trackPoints": [encode_track_point("Track Point 1", config.origin)],
    }
    (out_dir / f"{config.scene_id}.json").write_text(json.dumps(export, indent=2))
    write_video(frames, out_dir / f"{config.scene_id}.mp4", fps=config.frame_rate)


def sparse_points(views: list[View], cameras: list[pycolmap.Camera], depths: list[np.ndarray], rng: np.random.Generator,
                  per_image: int = 400) -> list[tuple[np.ndarray, list[tuple[int, np.ndarray]]]]:
    """SfM-like points: surface points seen by at least two photos, with their observations in the distorted cameras."""
    points = []
    for i, (view, depth) in enumerate(zip(views, depths)):
        vs, us = np.nonzero(depth > 0)
        pick = rng.choice(len(us), size=min(per_image, len(us)), replace=False)
        pix = np.stack([us[pick], vs[pick], np.ones(len(pick))], axis=1)
        cam_pts = (pix @ np.linalg.inv(view.K).T) * depth[vs[pick], us[pick], None]
        world_pts = cam_pts @ view.cam2world[:3, :3].T + view.cam2world[:3, 3]
        seen = [visible_observations(views[j], cameras[j], depths[j], world_pts) for j in range(len(views))]
        for k, X in enumerate(world_pts):
            track = [(j, seen[j][k]) for j in range(len(views)) if seen[j][k] is not None]
            if len(track) >= 2:
                points.append((X, track))
    return points


def visible_observations(view: View, camera: pycolmap.Camera, depth: np.ndarray, X: np.ndarray) -> list[np.ndarray | None]:
    """Per world point: its COLMAP pixel coordinates in the distorted camera if visible (in view, unoccluded), else None."""
    world2cam = np.linalg.inv(view.cam2world)
    x_cam = X @ world2cam[:3, :3].T + world2cam[:3, 3]
    z = x_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (x_cam / z[:, None]) @ view.K.T
    iu, iv = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (z > 0) & (iu >= 0) & (iu < view.width) & (iv >= 0) & (iv < view.height)
    visible = np.zeros(len(X), bool)
    visible[inside] = np.abs(depth[iv[inside], iu[inside]] - z[inside]) < 0.01 * z[inside]
    out: list[np.ndarray | None] = [None] * len(X)
    for k in np.flatnonzero(visible):
        xy = camera.img_from_cam(x_cam[k])
        if xy is not None and 0 <= xy[0] < view.width and 0 <= xy[1] < view.height:
            out[k] = np.asarray(xy)
    return out


def write_megadepth_scene(paths: SamplePaths, config: SampleConfig, views: list[View], cameras: list[pycolmap.Camera],
                          renders: list[tuple[np.ndarray, np.ndarray]], sfm_from_world: pycolmap.Sim3d,
                          rng: np.random.Generator) -> None:
    """The MegaDepth layout: SfM model in the arbitrary frame, undistorted images, depth in SfM units."""
    model = pycolmap.Reconstruction()
    for index, (view, camera) in enumerate(zip(views, cameras), start=1):
        camera.camera_id = index
        model.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=view.name, camera_id=index, image_id=index)
        model.add_image_with_trivial_frame(image, cam_from_world_from_cam2world(view.cam2world))
    observations: dict[int, list[np.ndarray]] = {i: [] for i in range(1, len(views) + 1)}
    tracks = []
    for X, track in sparse_points(views, cameras, [d for _, d in renders], rng):
        elements = []
        for j, xy in track:
            observations[j + 1].append(xy)
            elements.append(pycolmap.TrackElement(j + 1, len(observations[j + 1]) - 1))
        tracks.append((X, elements))
    for image_id, xys in observations.items():
        model.image(image_id).points2D = pycolmap.Point2DList([pycolmap.Point2D(xy) for xy in xys])
    for X, elements in tracks:
        model.add_point3D(X, pycolmap.Track(elements), np.zeros(3, np.uint8))
    model.transform(sfm_from_world)
    paths.sparse_dir.mkdir(parents=True)
    model.write_text(str(paths.sparse_dir))
    (paths.dense_dir / MEGADEPTH_IMAGES_DIR).mkdir(parents=True)
    (paths.dense_dir / MEGADEPTH_DEPTHS_DIR).mkdir()
    for index, (view, (rgb, depth)) in enumerate(zip(views, renders)):
        photo, quality = config.gap.camera_effects(config.seed, index, photo_look(rng, rgb))
        cv2.imwrite(str(paths.dense_dir / MEGADEPTH_IMAGES_DIR / view.name), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, quality])
        write_depth_h5(paths.dense_dir / MEGADEPTH_DEPTHS_DIR / f"{Path(view.name).stem}.h5", depth * float(np.squeeze(sfm_from_world.scale)))


def write_ground_truth(paths: SamplePaths, config: SampleConfig, world: World, views: list[View],
                       depths: list[np.ndarray], sfm_from_world: pycolmap.Sim3d) -> None:
    corners = [b.center + s * b.half_size for b in world.boxes for s in ([-1, -1], [1, 1])]
    extent_pts = np.concatenate([np.array([v.cam2world[:3, 3] for v in views]),
                                 np.array([[c[0], c[1], 0.0] for c in corners])])
    truth = {
        "scene": config.scene_id,
        "frame": WorldFrame.enu(config.origin).describe(),
        "conventions": "cam2world: camera-to-world 4x4, OpenCV camera axes; intrinsics: OpenCV pixel centres",
        "scene_extent_m": float(np.linalg.norm(extent_pts.max(axis=0) - extent_pts.min(axis=0))),
        "sfm_from_world": {"scale": float(np.squeeze(sfm_from_world.scale)), "rotation_matrix": sfm_from_world.rotation.matrix().tolist(),
                           "translation": sfm_from_world.translation.tolist()},
        "images": [{"name": v.name, "kind": v.kind, "width": v.width, "height": v.height, "intrinsics": v.K.tolist(),
                    "cam2world": v.cam2world.tolist()} for v in views],
    }
    paths.ground_truth_dir.mkdir(parents=True)
    (paths.ground_truth_dir / "cameras.json").write_text(json.dumps(truth, indent=1))
    (paths.ground_truth_dir / "depth").mkdir()
    for view, depth in zip(views, depths):
        write_depth_exr(paths.ground_truth_dir / "depth" / f"{view.name}.exr", depth)


def surface_grain(seed: int, stream: int, grain: Grain, texel_m: float) -> Texture | None:
    """A grain from a random stream of its own, np.random.default_rng([seed, stream]), so the rest of the sample is
    the same with or without it; None for a texel of 0."""
    if texel_m <= 0:
        return None
    return grain_detail(np.random.default_rng([seed, stream]), grain, texel_m)


def generate_sample(root: Path | str, config: SampleConfig = SampleConfig()) -> SamplePaths:
    """Create the sample under `root` (atomically), or reuse it when its marker records the same config."""
    paths = sample_paths(root, config)
    if paths.marker.is_file():
        if {**ADDED_SETTINGS, **json.loads(paths.marker.read_text())} == config.to_json():
            return paths
        raise FileExistsError(f"{paths.root}: holds a sample made with other settings; remove it to regenerate")
    if paths.root.exists() and any(paths.root.iterdir()):
        raise FileExistsError(f"{paths.root}: exists and is not a sample scene; choose an empty folder")
    rng = np.random.default_rng(config.seed)
    world = random_town(
        rng, config.num_buildings, config.town,
        ground_detail=surface_grain(config.seed, STREET_DETAIL_STREAM, PAVEMENT, config.street_detail_texel_m),
        wall_detail=surface_grain(config.seed, WALL_DETAIL_STREAM, WALL, config.wall_detail_texel_m))
    aerial = aerial_views(rng, config)
    ground, cameras = zip(*ground_cameras(rng, config, world))
    ground = with_photo_gap(config, world, list(ground))
    renders = render_views(world, aerial + list(ground), config.supersample, config.workers)
    aerial_renders, ground_renders = renders[: len(aerial)], renders[len(aerial):]
    sfm_from_world = random_similarity(rng)
    with atomic_dir(paths.root) as tmp:
        staged = SamplePaths(tmp, config.scene_id)
        staged.downloaded_dir.mkdir()
        write_ges_export(staged.downloaded_dir, config, aerial, [burn_attribution(rgb) for rgb, _ in aerial_renders])
        write_megadepth_scene(staged, config, ground, list(cameras), ground_renders, sfm_from_world, rng)
        save_scene_list(staged.scene_list, {config.scene_id: {"0": [v.name for v in ground]}})
        write_ground_truth(staged, config, world, aerial + list(ground), [d for _, d in renders], sfm_from_world)
        staged.marker.write_text(json.dumps(config.to_json(), indent=1))
    return paths
