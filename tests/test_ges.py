"""GES conventions on real exports: sphere model, parsing, frame counts, and the pose convention itself."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from aerialmd.formats.ges_json import (
    GES_ATTRIBUTION_BOX,
    GESFormatError,
    decode_cameras,
    default_world_frame,
    parse_ges_json,
    read_ges_json,
)
from aerialmd.geometry.camera import cam2world_from_cam_from_world
from aerialmd.geometry.geodesy import GES_SPHERE_RADIUS_M, SpherePoint, ecef_to_sphere, sphere_to_ecef
from tests.helpers import GESBLENDER_ORIGIN, shared_file


def test_sphere_model_matches_real_positions():
    runways = json.loads(shared_file("real/ges_sphere_points/runways_database.json").read_text())
    errors = []
    points = [p for airport in runways.values() for runway in airport.values() for p in runway.values()]
    for point in points:
        c = point["coordinate"]
        position = np.array([point["position"][k] for k in "xyz"])
        errors.append(np.linalg.norm(sphere_to_ecef(SpherePoint(c["latitude"], c["longitude"], c["altitude"])) - position))
        back = ecef_to_sphere(position)
        assert back.latitude == pytest.approx(c["latitude"], abs=1e-9)
        assert back.longitude == pytest.approx(c["longitude"], abs=1e-9)
        assert back.altitude == pytest.approx(c["altitude"], abs=1e-4)
    assert len(errors) == 460
    assert max(errors) < 1e-3
    # a WGS84 reading of the same numbers is off by kilometres: the check can fail
    assert np.linalg.norm(sphere_to_ecef(SpherePoint(40.0, 116.0, 30.0))) - GES_SPHERE_RADIUS_M == pytest.approx(30.0)


def test_fiumicino_global_export_parses_with_extra_frame():
    export = read_ges_json(shared_file("real/ges_fiumicino_global/fiumicino_5.json"))
    assert export.is_global
    assert export.num_frames == 96 and len(export.frames) == 97
    assert len(export.track_points) == 7
    world = default_world_frame(export)
    cameras = decode_cameras(export, world)
    for frame, camera in zip(export.frames, cameras):
        # the camera is 1 m above the sphere; decoded ENU height above the track point's tangent plane is near it
        lla = ecef_to_sphere(world.ecef_from_world(camera.center))
        assert lla.latitude == pytest.approx(frame.coordinate.latitude, abs=1e-9)
        assert lla.altitude == pytest.approx(frame.coordinate.altitude, abs=1e-3)
    f = cameras[0].camera.params[0]
    assert f == pytest.approx(540 / np.tan(np.radians(10)))


def _matched_keypoints(image_a: np.ndarray, image_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SIFT + ratio-test matches, with the GES attribution masked out."""
    h, w = image_a.shape[:2]
    mask = np.full((h, w), 255, np.uint8)
    x0, y0, x1, y1 = GES_ATTRIBUTION_BOX
    mask[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = 0
    sift = cv2.SIFT_create(nfeatures=4000)
    ka, da = sift.detectAndCompute(cv2.cvtColor(image_a, cv2.COLOR_BGR2GRAY), mask)
    kb, db = sift.detectAndCompute(cv2.cvtColor(image_b, cv2.COLOR_BGR2GRAY), mask)
    matches = cv2.BFMatcher().knnMatch(da, db, k=2)
    good = [m for m, n in matches if m.distance < 0.75 * n.distance]
    return np.array([ka[m.queryIdx].pt for m in good]), np.array([kb[m.trainIdx].pt for m in good])


def _sampson(F: np.ndarray, xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of correspondences to the epipolar geometry x_b^T F x_a = 0."""
    a = np.column_stack([xa, np.ones(len(xa))])
    b = np.column_stack([xb, np.ones(len(xb))])
    Fa, Ftb = a @ F.T, b @ F
    num = np.einsum("ij,ij->i", b, Fa)
    return np.abs(num) / np.sqrt(Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2)


def _fundamental(K: np.ndarray, cam2world_a: np.ndarray, cam2world_b: np.ndarray) -> np.ndarray:
    b_from_a = np.linalg.inv(cam2world_b) @ cam2world_a
    R, t = b_from_a[:3, :3], b_from_a[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    Kinv = np.linalg.inv(K)
    return Kinv.T @ tx @ R @ Kinv


OPENGL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


@pytest.mark.parametrize("pair", [(0, 6), (20, 26), (40, 46), (54, 60)])
def test_gesblender_poses_fit_the_rendered_pixels(pair):
    """Decoded poses explain SIFT matches between real rendered frames; the OpenGL reading does not."""
    root = shared_file("real/ges_gesblender_local")
    export = read_ges_json(root / "GESblender.json")
    assert not export.is_global
    cameras = decode_cameras(export, default_world_frame(export, GESBLENDER_ORIGIN))
    images = [cv2.imread(str(root / "footage" / f"GESblender_{i:03d}.jpeg")) for i in pair]
    xa, xb = _matched_keypoints(*images)
    assert len(xa) > 200
    ca, cb = (cameras[i] for i in pair)
    K = ca.intrinsics_opencv
    assert np.allclose(K, cb.intrinsics_opencv)
    pose_a, pose_b = cam2world_from_cam_from_world(ca.cam_from_world), cam2world_from_cam_from_world(cb.cam_from_world)
    assert np.median(_sampson(_fundamental(K, pose_a, pose_b), xa, xb)) < 0.5
    flipped = _fundamental(K, pose_a @ OPENGL_FLIP, pose_b @ OPENGL_FLIP)
    assert np.median(_sampson(flipped, xa, xb)) > 10.0


def test_bad_json_gives_clear_errors(tmp_path):
    with pytest.raises(GESFormatError, match="missing key 'cameraFrames'"):
        parse_ges_json({"width": 10, "height": 10}, "x.json")
    frame = {"position": {"x": 1, "y": 2, "z": float("nan")}, "rotation": {"x": 0, "y": 0, "z": 0}, "fovVertical": 30}
    with pytest.raises(GESFormatError, match=r"x.json: cameraFrames\[0\]: non-finite 'position'"):
        parse_ges_json({"width": 10, "height": 10, "cameraFrames": [frame]}, "x.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(GESFormatError, match="bad.json: malformed JSON"):
        read_ges_json(bad)
