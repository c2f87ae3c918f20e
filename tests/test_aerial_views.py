"""Photos confirmed by aerial frames warped to their predicted viewpoint (aerialmd/sfm/aerial_views.py), on real
files: a textured wall seen by an oblique aerial frame (its image, and a COLMAP model with the wall points it
observed) and by photos with their depth maps as EXR and SIFT features in features.h5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycolmap
from scipy.spatial.transform import Rotation

from aerialmd.sfm.aerial_views import AerialScene, confirm_through_aerial_views, matchable_area
from aerialmd.sfm.features import FeatureConf, ImageInput, extract_features
from aerialmd.sfm.registration import (
    STATUS_REJECTED,
    Correspondences,
    PhotoResult,
    RegistrationConf,
    keep_predicted_pose,
)
from tests.helpers import HEIGHT, WALL_Z, WIDTH, pose, render_photo, rotated, shifted, wall_texture


def oblique_frame(folder: Path, texture: np.ndarray, observed: bool = True) -> pycolmap.Reconstruction:
    """An aerial frame 25 m from the wall's centre, 55 deg off its normal (its pixels 4x coarser on the wall than a
    photo's square on at 10 m), written as footage/frame.jpg; the model holds it and (if `observed`) the wall points
    it observed."""
    to_wall = Rotation.from_euler("xy", [-40, 40], degrees=True).as_matrix()
    cam2world = np.eye(4)
    cam2world[:3, :3] = to_wall
    cam2world[:3, 3] = np.array([0.0, 0.0, WALL_Z]) - 25.0 * to_wall[:, 2]
    frame = render_photo(folder, "frame", texture, cam2world, cam2world)
    model = pycolmap.Reconstruction()
    model.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=WIDTH, height=HEIGHT, camera_id=1,
                                                      params=frame.camera.params))
    x, y = np.meshgrid(np.linspace(-6, 6, 25), np.linspace(-6, 6, 25))
    wall = np.column_stack([x.ravel(), y.ravel(), np.full(x.size, WALL_Z)])
    cam_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(to_wall.T), -to_wall.T @ cam2world[:3, 3])
    xy = frame.camera.img_from_cam(cam_from_world * wall)
    inside = (xy[:, 0] > 0) & (xy[:, 0] < WIDTH) & (xy[:, 1] > 0) & (xy[:, 1] < HEIGHT) & observed
    image = pycolmap.Image(name=frame.name, camera_id=1, image_id=1)
    image.points2D = pycolmap.Point2DList([pycolmap.Point2D(p) for p in xy[inside]])
    model.add_image_with_trivial_frame(image, cam_from_world)
    for index, point in enumerate(wall[inside]):
        track = pycolmap.Track()
        track.add_element(1, index)
        model.add_point3D(point, track)
    return model


def test_a_photo_is_registered_by_the_aerial_frame_seen_from_its_viewpoint_only_on_its_true_pose(tmp_path):
    """Photos 0-2 see the wall square on from 10 m; their MegaDepth poses (the Sim(3) is the identity) are the true
    one (photo 0: registered, by the warped frame), 1.5 deg off (1) and 0.5 m off sideways (2). Photo 3 sees the whole
    wall from 30 m, in the middle of its image, and its pose is rolled by 3 deg about the optical axis: the matches
    near the image centre give it the support of count and share, the pose they pull it to is 3 deg away. Photo 4
    looks away from the wall: no frame sees what it sees."""
    texture = wall_texture(11)
    footage = tmp_path / "footage"
    footage.mkdir()
    model = oblique_frame(footage, texture)
    view, far, away = pose(0, [0.5, -0.5, 0]), pose(0, [0.5, -0.5, -20]), pose(180, [0, 0, 0])
    rolled = far.copy()
    rolled[:3, :3] = far[:3, :3] @ Rotation.from_rotvec([0, 0, np.radians(3)]).as_matrix()
    views = [view, view, view, far, away]
    sfm_poses = [view, rotated(view, 1.5), shifted(view, [0.5, 0, 0]), rolled, away]
    photos = [render_photo(tmp_path, f"photo{k}", texture, true, sfm)
              for k, (true, sfm) in enumerate(zip(views, sfm_poses))]
    features = tmp_path / "features.h5"
    extract_features([ImageInput(p.name, p.path) for p in photos], features, FeatureConf())
    results = [PhotoResult(p.name, STATUS_REJECTED, reason="aerial matches") for p in photos]

    def keep(index: int) -> None:
        keep_predicted_pose(results[index], photos[index].camera, photos[index].cam2world_sfm,
                            Correspondences.joined([]), RegistrationConf())

    scene = AerialScene(model, footage, pycolmap.Sim3d())
    confirm_through_aerial_views(photos, results, scene, features, FeatureConf(), keep, RegistrationConf())
    assert [r.status for r in results] == ["registered", "rejected", "rejected", "rejected", "rejected"]
    assert results[0].confirmed_by == "aerial_views" and results[0].view_support >= 0.3 * results[0].view_matches
    for wrong in results[1:4]:
        assert wrong.cam_from_world is None and wrong.reason.startswith("aerial matches; ")
        assert "matched to aerial frames seen from its predicted pose confirm it" in wrong.reason
    assert results[1].view_support < 0.05 * results[1].view_matches
    assert results[3].view_support >= max(12, 0.08 * results[3].view_matches), "the geometry changed: no roll test"
    assert "confirm the pose they pull it to" in results[3].reason
    assert results[4].reason == "aerial matches; no aerial frame sees its surface from within 60 deg of its view"


def test_a_frame_that_triangulated_nothing_of_the_photo_s_surface_is_warped_when_it_sees_it_from_near_its_view(
        tmp_path):
    """The aerial model has no point on the wall (a facade triangulated from nowhere above), but the frame sees the wall
    within 60 deg of the photo's rays: it is warped and confirms the photo's true pose."""
    texture = wall_texture(11)
    footage = tmp_path / "footage"
    footage.mkdir()
    model = oblique_frame(footage, texture, observed=False)
    assert model.num_points3D() == 0
    photo = render_photo(tmp_path, "photo", texture, pose(0, [0.5, -0.5, 0]), pose(0, [0.5, -0.5, 0]))
    features = tmp_path / "features.h5"
    extract_features([ImageInput(photo.name, photo.path)], features, FeatureConf())
    results = [PhotoResult(photo.name, STATUS_REJECTED, reason="aerial matches")]

    def keep(index: int) -> None:
        keep_predicted_pose(results[index], photo.camera, photo.cam2world_sfm, Correspondences.joined([]),
                            RegistrationConf())

    confirm_through_aerial_views([photo], results, AerialScene(model, footage, pycolmap.Sim3d()), features,
                                 FeatureConf(), keep, RegistrationConf())
    assert results[0].status == "registered" and results[0].confirmed_by == "aerial_views"


def test_keypoints_are_not_taken_on_the_photo_s_own_depth_edges():
    """The warp draws an edge wherever the photo's depth jumps and where the area it shows ends, through any pose: no
    keypoint may be taken within 8 px of either, only on the smooth surfaces beyond."""
    depth = np.full((60, 80), 10.0, np.float32)
    depth[:, 40:] = 20.0
    shown = np.ones(depth.shape, bool)
    shown[:10] = False  # e.g. the sky, or outside the aerial frame
    area = matchable_area(shown, depth)
    assert not area[:, 31:49].any() and not area[:18].any()
    assert area[18:, :31].all() and area[18:, 49:].all()
    assert matchable_area(shown, np.full((60, 80), 10.0, np.float32))[18:].all()
