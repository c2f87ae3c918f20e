"""The sample scene's files agree with its ground truth, and the ground truth agrees with the rendered pixels."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import cv2
import numpy as np
import pycolmap
import pytest

from aerialmd.formats.dense_model import project
from aerialmd.formats.depth import read_depth_exr, read_depth_h5
from aerialmd.formats.ges_json import decode_cameras, default_world_frame, read_ges_json
from aerialmd.formats.video import probe_video
from aerialmd.geometry.camera import cam2world_from_cam_from_world, pose_errors
from aerialmd.run.scenes import load_scene_list
from aerialmd.sample_scene import SampleConfig, generate_sample
from aerialmd.sample_scene.appearance import AppearanceGap
from aerialmd.sample_scene.evaluation import truth_points, truth_view
from aerialmd.sample_scene.render import render
from aerialmd.sample_scene.textures import PAVEMENT, WALL, grain_detail, ground_texture
from aerialmd.sample_scene.viewpoints import Orbit, look_at
from aerialmd.sample_scene.world import Box, World, box_textures
from aerialmd.stages.preprocess_megadepth import undistorted_intrinsics
from tests.helpers import ground_truth


def test_ges_json_decodes_to_ground_truth_poses(tiny_sample):
    paths, config = tiny_sample
    export = read_ges_json(paths.ges_json)
    assert export.is_global and len(export.frames) == export.num_frames + 1 == config.num_frames
    cameras = decode_cameras(export, default_world_frame(export))
    truth = [im for im in ground_truth(paths)["images"] if im["kind"] == "aerial"]
    assert len(truth) == len(cameras)
    for camera, image in zip(cameras, truth):
        distance, angle = pose_errors(cam2world_from_cam_from_world(camera.cam_from_world), image["cam2world"])
        assert distance < 1e-6 and angle < 1e-6
        assert np.allclose(camera.intrinsics_opencv, image["intrinsics"], atol=1e-9)
    video = probe_video(paths.video)
    assert (video.width, video.height) == config.aerial_size
    assert video.frames in (None, config.num_frames)


def test_megadepth_model_is_the_ground_truth_in_a_similarity_frame(tiny_sample):
    paths, config = tiny_sample
    truth = ground_truth(paths)
    sim = truth["sfm_from_world"]
    scale, R, t = sim["scale"], np.array(sim["rotation_matrix"]), np.array(sim["translation"])
    model = pycolmap.Reconstruction(str(paths.sparse_dir))
    ground = {im["name"]: im for im in truth["images"] if im["kind"] == "ground"}
    assert load_scene_list(paths.scene_list) == {config.scene_id: {"0": list(ground)}}
    assert model.num_reg_images() == len(ground) == config.num_ground
    for image in model.images.values():
        true = ground[image.name]
        cam2world_sfm = cam2world_from_cam_from_world(image.cam_from_world())
        expected = np.eye(4)
        expected[:3, :3] = R @ true["cam2world"][:3, :3]
        expected[:3, 3] = scale * R @ true["cam2world"][:3, 3] + t
        distance, angle = pose_errors(cam2world_sfm, expected)
        assert distance < 1e-6 * scale * 1000 and angle < 1e-6
        camera = model.camera(image.camera_id)
        assert camera.model.name == "SIMPLE_RADIAL" and (camera.width, camera.height) == (true["width"], true["height"])
        assert np.allclose(undistorted_intrinsics(camera, (camera.width, camera.height)), true["intrinsics"])
        depth_sfm = read_depth_h5(paths.dense_dir / "depths" / f"{image.name[:-4]}.h5")
        depth_true = read_depth_exr(paths.ground_truth_dir / "depth" / f"{image.name}.exr")
        assert np.allclose(depth_sfm, depth_true * scale, rtol=1e-5)
        assert (depth_true == 0).any() or (depth_true > 0).all()
    assert model.num_points3D() > 50
    assert model.compute_mean_reprojection_error() < 0.01


@pytest.fixture(scope="module")
def frames_dir(tiny_sample, tmp_path_factory):
    """The sample video's frames, extracted once for this module (beside the sample, which stays as generated)."""
    from aerialmd.formats.video import extract_frames

    paths, _ = tiny_sample
    folder = tmp_path_factory.mktemp("frames")
    extract_frames(paths.video, folder, paths.scene_id, progress=False)
    return folder


@pytest.mark.parametrize("kinds", [("aerial", "aerial"), ("ground", "ground"), ("ground", "aerial")])
def test_depths_poses_and_pixels_agree_across_views(tiny_sample, frames_dir, kinds):
    """Warping one view's pixels with its depth and both poses lands on the same depth and colour in the other."""
    paths, _ = tiny_sample
    images = ground_truth(paths)["images"]

    def rgb(image):
        """Local contrast of the image (grey minus its local mean, over the local spread): the views of a point agree
        in it under each photo's own light (AppearanceGap), which scales each facade's brightness differently."""
        folder = frames_dir if image["kind"] == "aerial" else paths.dense_dir / "imgs"
        grey = cv2.cvtColor(cv2.imread(str(folder / image["name"])), cv2.COLOR_BGR2GRAY).astype(np.float64)
        grey = cv2.GaussianBlur(grey, (0, 0), 1.0)  # the photos' sensor noise
        mean = cv2.blur(grey, (15, 15))
        spread = np.sqrt(np.maximum(cv2.blur(grey * grey, (15, 15)) - mean * mean, 0.0)) + 4.0
        return (grey - mean) / spread

    candidates = [(a, b) for a in images for b in images if a is not b and (a["kind"], b["kind"]) == kinds]
    checked = 0
    for src, dst in candidates:
        depth_src = read_depth_exr(paths.ground_truth_dir / "depth" / f"{src['name']}.exr")
        depth_dst = read_depth_exr(paths.ground_truth_dir / "depth" / f"{dst['name']}.exr")
        uv_src, world = truth_points(src, depth_src, step=3)
        uv_dst, z = project(truth_view(dst), world)
        uv_src = uv_src.astype(int)
        inside = (z > 0) & np.all((uv_dst >= 0) & (uv_dst <= [dst["width"] - 1, dst["height"] - 1]), axis=1)
        if inside.sum() < 500:
            continue
        d_dst = cv2.remap(depth_dst, uv_dst[inside, :1].astype(np.float32), uv_dst[inside, 1:].astype(np.float32),
                          cv2.INTER_LINEAR)[:, 0]
        rel = np.abs(d_dst - z[inside]) / z[inside]
        visible = rel < 0.01
        if visible.sum() < 300:  # mostly occluded in dst
            continue
        assert np.median(rel[visible]) < 1e-3
        a, b = rgb(src), rgb(dst)
        src_px = uv_src[inside][visible]
        dst_px = uv_dst[inside][visible].astype(np.float32)
        values_src = a[src_px[:, 1], src_px[:, 0]]
        values_dst = cv2.remap(b, dst_px[:, :1], dst_px[:, 1:], cv2.INTER_LINEAR)[:, 0]
        values_off = cv2.remap(b, dst_px[:, :1] + 6, dst_px[:, 1:] + 6, cv2.INTER_LINEAR)[:, 0]
        same = np.corrcoef(values_src, values_dst)[0, 1]
        # two photos under their own suns and clouds agree less (0.31-0.76 on the tiny sample) than aerial frames
        # (0.67-0.88); 6 px away the agreement is gone (-0.13 to -0.02)
        assert same > 0.25 and same > np.corrcoef(values_src, values_off)[0, 1] + 0.25
        checked += 1
        if checked == 3:
            break
    assert checked > 0


def _digest(root) -> dict[str, str]:
    digests = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=True) as data:
                content = repr({k: data[k].tolist() for k in data.files}).encode()
        else:
            content = path.read_bytes()
        digests[str(path.relative_to(root))] = hashlib.sha256(content).hexdigest()
    return digests


@pytest.mark.slow
def test_same_seed_gives_same_files(tmp_path):
    config = SampleConfig.tiny(num_buildings=2, orbits=(Orbit(60.0, 150.0, 3),), aerial_size=(160, 90), num_ground=2,
                               ground_long_side=160, workers=1)
    first = generate_sample(tmp_path / "a", config)
    second = generate_sample(tmp_path / "b", config)
    assert _digest(first.root) == _digest(second.root)
    other = generate_sample(tmp_path / "c", SampleConfig.tiny(**{**config.__dict__, "seed": 1}))
    assert _digest(other.root) != _digest(first.root)
    assert generate_sample(first.root, config).root == first.root  # reused, not regenerated
    with pytest.raises(FileExistsError, match="other settings"):
        generate_sample(first.root, SampleConfig.tiny(**{**config.__dict__, "seed": 1}))


@pytest.mark.slow
@pytest.mark.parametrize("spots", [1, 3])
def test_photos_from_popular_spots_stand_near_them_and_see_the_town(spots):
    """With ground_spots, every photo stands within a few spreads of one of `spots` places (people photograph a
    landmark from a few favourite spots); without, the photos are scattered over the town."""
    from aerialmd.sample_scene.generate import ground_cameras
    from aerialmd.sample_scene.world import random_town

    def centres(config: SampleConfig) -> np.ndarray:
        rng = np.random.default_rng(config.seed)
        world = random_town(rng, config.num_buildings)
        views = [view for view, _ in ground_cameras(rng, config, world)]
        assert not any(b.contains(v.cam2world[:3, 3]) for b in world.boxes for v in views)
        return np.array([v.cam2world[:3, 3] for v in views])

    spread = 2.0
    clustered = centres(SampleConfig(ground_spots=spots, spot_spread_m=spread))
    distances = np.linalg.norm(clustered[:, None, :2] - clustered[None, :, :2], axis=2)
    near = distances < 6 * spread
    groups = {tuple(row) for row in near}
    assert len(groups) <= spots and all(sum(group) >= 2 for group in groups)
    scattered = centres(SampleConfig(ground_spots=0))
    assert (np.linalg.norm(scattered[:, None, :2] - scattered[None, :, :2], axis=2) >= 6 * spread).mean() > 0.5


def test_a_sample_made_before_settings_were_added_is_reused_only_for_their_old_values(tmp_path):
    from aerialmd.sample_scene.generate import ADDED_SETTINGS, MARKER_NAME

    config = SampleConfig.tiny(gap=AppearanceGap.off())
    old_marker = {k: v for k, v in config.to_json().items() if k not in ADDED_SETTINGS}
    (tmp_path / MARKER_NAME).write_text(json.dumps(old_marker))
    assert generate_sample(tmp_path, config).root == tmp_path  # reused, nothing rendered
    for other in (SampleConfig.tiny(gap=AppearanceGap.off(), ground_spots=2), SampleConfig.tiny()):
        with pytest.raises(FileExistsError, match="made with other settings"):
            generate_sample(tmp_path, other)


def grained_worlds(surface: str) -> tuple[World, World, np.ndarray, np.ndarray]:
    """A world without and with the grain of `surface` ("street": the pavement on open ground, "wall": the wall grain
    on a building's facades), a street photo's cam2world 2-8 m from that surface and an aerial view's of it."""
    ground = ground_texture(np.random.default_rng(0), 200.0, 0.3)
    if surface == "street":
        grain = grain_detail(np.random.default_rng(1), PAVEMENT, 0.02)
        photo = look_at(np.array([0.0, 0.0, 1.7]), np.array([0.0, 8.0, 0.0]))
        aerial = look_at(np.array([0.0, -150.0, 150.0]), np.array([0.0, 0.0, 0.0]))
        return World([], 200.0, [ground]), World([], 200.0, [dataclasses.replace(ground, detail=grain)]), photo, aerial
    box = Box(np.array([0.0, 10.0]), np.array([6.0, 6.0]), 20.0, 0.0)  # its nearest wall at y = 4
    walls = [box_textures(np.random.default_rng(2), box, 0.06, detail) for detail in
             (None, grain_detail(np.random.default_rng(1), WALL, 0.01))]
    photo = look_at(np.array([0.0, 2.0, 1.7]), np.array([0.0, 4.0, 3.0]))
    aerial = look_at(np.array([0.0, -60.0, 60.0]), np.array([0.0, 4.0, 10.0]))  # the wall fills a third of it
    return World([box], 200.0, [ground, *walls[0]]), World([box], 200.0, [ground, *walls[1]]), photo, aerial


@pytest.mark.parametrize("surface", ["street", "wall"])
def test_grain_shows_up_close_and_averages_out_from_the_air(surface):
    """Up close a surface's own texels (0.3 m on the ground, 6 cm on walls) are magnified into blur or flat blocks; its
    grain (SampleConfig.street_detail_texel_m, wall_detail_texel_m) gives a street photo fine structure there, while
    aerial views, whose pixels cover many grain texels, see about the same picture as without it."""
    plain, grained, photo, aerial = grained_worlds(surface)
    K = np.array([[300.0, 0.0, 79.5], [0.0, 300.0, 59.5], [0.0, 0.0, 1.0]])

    def fine_structure(world: World, cam2world: np.ndarray, first_row: int) -> tuple[np.ndarray, float]:
        gray = cv2.cvtColor(render(world, K, cam2world, 160, 120, supersample=2)[0], cv2.COLOR_RGB2GRAY)
        return gray.astype(np.float64), float(np.std(cv2.Laplacian(gray[first_row:].astype(np.float64), cv2.CV_64F)))

    close_rows = 60 if surface == "street" else 0  # the street fills the lower half of its photo, the wall all of it
    assert fine_structure(grained, photo, close_rows)[1] > 3 * fine_structure(plain, photo, close_rows)[1]
    (with_grain, grained_energy), (without, plain_energy) = fine_structure(grained, aerial, 0), \
        fine_structure(plain, aerial, 0)
    assert np.median(np.abs(with_grain - without)) < 0.05 * np.median(without)
    assert grained_energy < 1.3 * plain_energy
