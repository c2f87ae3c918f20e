"""The sample's appearance gap (aerialmd/sample_scene/appearance.py): each effect shows in the renders where it should
and nowhere else, and the ground truth stays exact in both worlds."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from aerialmd.formats.depth import read_depth_exr
from aerialmd.sample_scene import SampleConfig, generate_sample
from aerialmd.sample_scene.appearance import OVERCAST, AppearanceGap, transients_in_view
from aerialmd.sample_scene.family import family_config
from aerialmd.sample_scene.render import SUN_DIRECTION, Lighting, Look, render
from aerialmd.sample_scene.textures import ground_texture
from aerialmd.sample_scene.viewpoints import Orbit, look_at
from aerialmd.sample_scene.world import Box, World, box_textures
from tests.helpers import ground_truth

K = np.array([[200.0, 0.0, 79.5], [0.0, 200.0, 59.5], [0.0, 0.0, 1.0]])


def tower_world() -> World:
    """A 30 m tower on open ground."""
    box = Box(np.array([0.0, 0.0]), np.array([5.0, 5.0]), 30.0, 0.0)
    return World([box], 300.0, [ground_texture(np.random.default_rng(0), 300.0, 0.3),
                                *box_textures(np.random.default_rng(1), box, 0.06)])


def gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)


def test_shadows_darken_only_the_ground_the_tower_hides_from_the_sun():
    """With cast_shadows, the ground on the tower's far side from a low sun gets ambient light only; the rest of the
    picture and the depth are as without."""
    sun = np.array([1.0, 0.0, 0.5]) / np.linalg.norm([1.0, 0.0, 0.5])  # low in the east: the shadow falls west
    above = look_at(np.array([0.0, -60.0, 80.0]), np.array([-25.0, 0.0, 0.0]))
    plain, depth_plain = render(tower_world(), K, above, 160, 120, 1, Look(Lighting(tuple(sun))))
    shadowed, depth_shadowed = render(tower_world(), K, above, 160, 120, 1, Look(Lighting(tuple(sun), shadows=True)))
    assert np.array_equal(depth_plain, depth_shadowed)
    darker = gray(shadowed) < 0.8 * gray(plain)
    assert 0.03 < darker.mean() < 0.5
    # every darkened pixel is ground west of the tower (x < -5 m), in the direction away from the sun
    rays = np.stack(np.meshgrid(np.arange(160), np.arange(120)), axis=-1).reshape(-1, 2)
    cam = np.concatenate([rays, np.ones((len(rays), 1))], axis=1) @ np.linalg.inv(K).T * depth_plain.reshape(-1, 1)
    world_x = (cam @ above[:3, :3].T + above[:3, 3])[:, 0].reshape(120, 160)
    assert np.all(world_x[darker] < -4.5)
    assert np.array_equal(gray(shadowed)[~darker & (world_x > 6)], gray(plain)[~darker & (world_x > 6)])


def test_aerial_texel_blurs_close_views_only():
    """aerial_texel_m removes texture detail finer than itself: on a wall 15 m away (3.75 cm per render sample) the
    fine structure mostly goes; a view from 600 m (about 1.5 m per sample) is unchanged."""
    def fine_structure(cam2world: np.ndarray, texel: float) -> tuple[float, np.ndarray]:
        rgb, depth = render(tower_world(), K, cam2world, 160, 120, 2, Look(min_texel_m=texel))
        image = gray(rgb)
        residual = image - cv2.GaussianBlur(image, (0, 0), 1.5)
        inside = cv2.erode(((depth > 14.9) & (depth < 15.1)).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        return float(np.std(residual[inside] if inside.mean() > 0.3 else residual)), depth

    close = look_at(np.array([0.0, -20.0, 15.0]), np.array([0.0, -5.0, 15.0]))  # the tower's south wall, y = -5
    (sharp, depth_sharp), (blurred, depth_blurred) = fine_structure(close, 0.0), fine_structure(close, 0.3)
    assert blurred < 0.5 * sharp and np.array_equal(depth_sharp, depth_blurred)
    far = look_at(np.array([0.0, -420.0, 420.0]), np.array([0.0, 0.0, 0.0]))
    assert fine_structure(far, 0.3)[0] == fine_structure(far, 0.0)[0]


def test_photos_have_their_own_sun_and_clouds_and_aerials_keep_the_ges_sun():
    gap = AppearanceGap(overcast_share=0.3)
    looks = gap.photo_looks(seed=0, count=40)
    suns = {look.lighting.sun_direction for look in looks if look.lighting != OVERCAST}
    overcast = sum(look.lighting == OVERCAST for look in looks)
    assert len(suns) == 40 - overcast and 4 <= overcast <= 20
    assert all(look.min_texel_m == 0 and (look.lighting.shadows or look.lighting == OVERCAST) for look in looks)
    assert np.allclose(gap.aerial_look().lighting.sun_direction, SUN_DIRECTION)
    assert gap.aerial_look().min_texel_m == gap.aerial_texel_m > 0
    off = AppearanceGap.off()
    assert {look.lighting for look in off.photo_looks(0, 5)} == {off.aerial_look().lighting} == {Lighting()}


def test_cars_and_people_stand_in_front_of_their_photo_outside_buildings():
    world = tower_world()
    photo = look_at(np.array([0.0, -60.0, 1.7]), np.array([0.0, 0.0, 10.0]))
    boxes, textures = transients_in_view(0, 3, world, photo, np.radians(60), mean_count=6)
    assert len(boxes) >= 2 and len(textures) == 5 * len(boxes)
    for box in boxes:
        offset = np.append(box.center, 0.0) - photo[:3, 3]
        assert 2.0 < np.linalg.norm(offset[:2]) < 31.0 and offset @ photo[:3, 2] > 0  # in front of the camera
        assert not world.boxes[0].contains(np.append(box.center, 0.5)) and box.height < 2.0
    again = transients_in_view(0, 3, world, photo, np.radians(60), mean_count=6)[0]
    assert [b.center.tolist() for b in again] == [b.center.tolist() for b in boxes]  # the photo's own stream


@pytest.fixture(scope="module")
def samples_with_and_without_gap(tmp_path_factory):
    """The same small scene made with the gap (many cars and people) and without."""
    base = SampleConfig.tiny(num_buildings=2, orbits=(Orbit(60.0, 150.0, 3),), aerial_size=(160, 90), num_ground=3,
                             ground_long_side=160, workers=1)
    root = tmp_path_factory.mktemp("gap")
    with_gap = generate_sample(root / "on", dataclasses.replace(base, gap=AppearanceGap(transients_per_photo=8.0)))
    return with_gap, generate_sample(root / "off", dataclasses.replace(base, gap=AppearanceGap.off()))


def truth_depths(paths, kind: str) -> dict[str, np.ndarray]:
    return {im["name"]: read_depth_exr(paths.ground_truth_dir / "depth" / f"{im['name']}.exr")
            for im in ground_truth(paths)["images"] if im["kind"] == kind}


@pytest.mark.slow
def test_truth_has_each_photos_transients_and_no_aerial_ones(samples_with_and_without_gap):
    """A photo's true depth includes its cars and people (nearer than the town behind them, nothing farther); the
    aerial truth is the same with and without the gap."""
    on, off = samples_with_and_without_gap
    aerial_on, aerial_off = truth_depths(on, "aerial"), truth_depths(off, "aerial")
    assert all(np.array_equal(aerial_on[name], aerial_off[name]) for name in aerial_off)
    ground_on, ground_off = truth_depths(on, "ground"), truth_depths(off, "ground")
    covered = []
    for name, depth_off in ground_off.items():
        depth_on = ground_on[name]
        changed = depth_on != depth_off
        assert np.all((depth_on[changed] < depth_off[changed]) | (depth_off[changed] == 0))
        covered.append(changed.mean())
    assert sum(c > 0.005 for c in covered) >= 2


@pytest.mark.slow
def test_photos_carry_sensor_noise(samples_with_and_without_gap):
    """With the gap the photos are noisier: the fine residual of their sky (smooth in the renders)."""
    on, off = samples_with_and_without_gap

    def sky_noise(paths) -> float:
        images = sorted((paths.dense_dir / "imgs").iterdir())
        residuals = []
        for path in images:
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float64)
            depth = read_depth_exr(paths.ground_truth_dir / "depth" / f"{path.name}.exr")
            sky = cv2.erode((depth == 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            residuals.append((image - cv2.GaussianBlur(image, (5, 5), 0))[sky])
        return float(np.std(np.concatenate(residuals)))

    assert sky_noise(on) > 2 * sky_noise(off)


def test_family_draws_varied_scenes_from_a_seed():
    configs = [family_config(seed) for seed in range(1, 13)]
    assert family_config(3) == configs[2]  # the same seed, the same scene
    assert len({c.num_buildings for c in configs}) >= 5 and len({c.num_ground for c in configs}) >= 4
    assert {c.ground_spots == 0 for c in configs} == {True, False}
    altitudes = [o.altitude_m for c in configs for o in c.orbits]
    assert all(20 <= min(o.altitude_m for o in c.orbits) <= 60 for c in configs) and 150 < max(altitudes) <= 300
    assert all(16 <= c.num_ground <= 24 and 24 <= c.num_frames <= 36 for c in configs)
    assert all(5 <= c.photo_distance_m[0] < c.photo_distance_m[1] <= 80 for c in configs)
    assert family_config(1, layout="scattered").ground_spots == 0 and family_config(1, layout="spots").ground_spots > 0
    assert family_config(1, gap=False).gap == AppearanceGap.off() and configs[0].gap == AppearanceGap()
    assert all(o.radius_m <= 2400 / 2 for c in configs for o in c.orbits)
    with pytest.raises(ValueError, match="size"):
        family_config(1, size="medium")
