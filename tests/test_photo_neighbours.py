"""Photos confirmed through registered neighbours (aerialmd/sfm/photo_neighbours.py), on real files: a textured wall
rendered into photos with known poses, their depth maps as EXR, SIFT features in features.h5."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pycolmap
from scipy.spatial.transform import Rotation

from aerialmd.formats.depth import write_depth_exr
from aerialmd.sample_scene.textures import draw_random_shapes, fractal_noise
from aerialmd.sfm.features import FeatureConf, ImageInput, extract_features
from aerialmd.sfm.photo_neighbours import confirm_through_neighbours, photo_overlaps
from aerialmd.sfm.registration import (
    STATUS_REGISTERED,
    STATUS_REJECTED,
    Correspondences,
    GroundPhoto,
    PhotoResult,
    RegistrationConf,
    keep_predicted_pose,
)

WALL_Z, WALL_HALF, TEXELS = 10.0, 8.0, 768  # the wall: z = 10 in the SfM frame, x and y within +-8
WIDTH, HEIGHT, FOCAL = 480, 360, 400.0


def wall_texture(seed: int) -> np.ndarray:
    """Plaster noise with marks 10 cm to 1 m wide, as the sample's facades have."""
    rng = np.random.default_rng(seed)
    image = 0.5 + 0.5 * fractal_noise(rng, (TEXELS, TEXELS), 96.0, octaves=6)
    texel = 2 * WALL_HALF / TEXELS
    draw_random_shapes(rng, image, 1500, (0.1 / texel, 1.0 / texel), np.full(3, 0.4, np.float32), 0.35)
    return (255 * np.clip(image, 0, 1)).astype(np.uint8)


def render_photo(folder: Path, name: str, texture: np.ndarray, cam2world: np.ndarray,
                 cam2world_sfm: np.ndarray) -> GroundPhoto:
    """The wall seen from `cam2world` (OpenCV axes), written as an image and a depth map; the photo's SfM pose is
    `cam2world_sfm` (the true pose, or a wrong one)."""
    K = np.array([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]])
    world2cam = np.linalg.inv(cam2world)
    texel = 2 * WALL_HALF / TEXELS
    wall_from_texel = np.array([[texel, 0, -WALL_HALF], [0, texel, -WALL_HALF], [0, 0, WALL_Z]])
    homography = K @ (world2cam[:3, :3] @ wall_from_texel + np.outer(world2cam[:3, 3], [0, 0, 1]))
    image = cv2.warpPerspective(texture, homography, (WIDTH, HEIGHT), flags=cv2.INTER_AREA)
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    rays = np.stack([(u - WIDTH / 2) / FOCAL, (v - HEIGHT / 2) / FOCAL, np.ones_like(u, float)], -1)
    rays = rays @ cam2world[:3, :3].T
    along = (WALL_Z - cam2world[2, 3]) / rays[..., 2]
    hit = cam2world[:3, 3] + along[..., None] * rays
    on_wall = (along > 0) & (np.abs(hit[..., 0]) < WALL_HALF) & (np.abs(hit[..., 1]) < WALL_HALF)
    path = folder / f"{name}.jpg"
    cv2.imwrite(str(path), image * on_wall[..., None].astype(np.uint8))
    write_depth_exr(folder / f"{name}.exr", np.where(on_wall, along, 0.0).astype(np.float32))
    camera = pycolmap.Camera(model="PINHOLE", width=WIDTH, height=HEIGHT,
                             params=[FOCAL, FOCAL, WIDTH / 2 + 0.5, HEIGHT / 2 + 0.5])
    return GroundPhoto(path.name, path, camera, cam2world_sfm, folder / f"{name}.exr")


def pose(yaw_deg: float, position: list[float]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_euler("y", yaw_deg, degrees=True).as_matrix()
    out[:3, 3] = position
    return out


def rotated(cam2world: np.ndarray, degrees: float) -> np.ndarray:
    out = cam2world.copy()
    out[:3, :3] = Rotation.from_rotvec(np.radians(degrees) * np.array([0.6, 0.8, 0.0])).as_matrix() @ out[:3, :3]
    return out


def shifted(cam2world: np.ndarray, offset: list[float]) -> np.ndarray:
    out = cam2world.copy()
    out[:3, 3] += offset
    return out


def test_a_photo_is_registered_through_its_registered_neighbours_only_on_its_true_pose(tmp_path):
    """Photo 0 is registered (by the aerial frames). Photo 1 has its true MegaDepth pose and sees the wall photo 0
    sees: registered, by neighbours. Photos 2 and 3 see the same wall but their MegaDepth poses are wrong by 1.5 deg
    and by 0.5 m sideways at 10 m (3 deg of parallax): rejected, with the reason. Photo 4 looks away from the wall:
    rejected, nothing overlaps it. Photo 5 sees only the part of the wall photo 1 sees and photo 0 does not at a
    footprint it can match: registered in the second round, through photo 1."""
    texture = wall_texture(7)
    views = [pose(0, [0, 0, 0]), pose(8, [-1.5, 0.3, 5.0]), pose(-6, [1.0, -0.2, 0.0]), pose(4, [0.5, 0.5, 0.4]),
             pose(180, [0, 0, 0]), pose(-10, [-2.0, 0.0, 8.0])]
    sfm_poses = [views[0], views[1], rotated(views[2], 1.5), shifted(views[3], [0.5, 0, 0]), views[4], views[5]]
    photos = [render_photo(tmp_path, f"photo{k}", texture, view, sfm) for k, (view, sfm)
              in enumerate(zip(views, sfm_poses))]
    features = tmp_path / "features.h5"
    extract_features([ImageInput(p.name, p.path) for p in photos], features, FeatureConf())
    overlaps = photo_overlaps(photos, list(range(len(photos))))
    assert overlaps[5, 0] < 0.1 <= overlaps[5, 1], "photo 5 must need photo 1 (the scene's geometry changed)"
    assert overlaps[4].max() == 0.0 and overlaps[1, 0] > 0.5

    results = [PhotoResult(p.name, STATUS_REJECTED, reason="aerial matches") for p in photos]
    results[0].status = STATUS_REGISTERED
    none = Correspondences(*(np.zeros(shape) for shape in (0, (0, 2), (0, 3), 0)))

    def keep(index: int) -> None:
        keep_predicted_pose(results[index], photos[index].camera, photos[index].cam2world_sfm, none, RegistrationConf())

    confirm_through_neighbours(photos, results, features, keep, RegistrationConf())
    assert [r.status for r in results] == ["registered", "registered", "rejected", "rejected", "rejected",
                                           "registered"]
    assert [r.confirmed_by for r in results] == [None, "neighbours", None, None, None, "neighbours"]
    assert results[1].neighbour_support >= 50 and results[1].neighbour_support >= 0.5 * results[1].neighbour_matches
    for wrong in results[2:4]:
        assert wrong.cam_from_world is None and wrong.neighbour_support < 0.05 * wrong.neighbour_matches
        assert wrong.reason.startswith("aerial matches; ") and "registered photos confirm its pose" in wrong.reason
    assert "no registered photo overlaps it" in results[4].reason
