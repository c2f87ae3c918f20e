"""Camera conventions, defined once for the whole package.

Pixel coordinates
    COLMAP: the top-left corner of the image is (0, 0); the centre of the first pixel is (0.5, 0.5).
    OpenCV: the centre of the first pixel is (0, 0); the image centre of a W x H image is ((W-1)/2, (H-1)/2).
    So cx_opencv = cx_colmap - 0.5 (same for cy). COLMAP models (cameras.txt, pycolmap) use the COLMAP convention;
    every `intrinsics` array we write to npz (MegaDepth export, DUSt3R export, ground truth) uses OpenCV's, as DUSt3R does.

Camera axes
    OpenCV/COLMAP: x right, y down, z forward (looking direction). Google Earth Studio uses the same axes.

Poses
    cam_from_world: world-to-camera rigid transform, x_cam = R x_world + t (pycolmap.Rigid3d, COLMAP images.txt).
    cam2world:      camera-to-world 4x4 matrix, its inverse (DUSt3R/MASt3R npz files, ground-truth files).
"""

from __future__ import annotations

import numpy as np
import pycolmap
from scipy.spatial.transform import Rotation

COLMAP_TO_OPENCV_PIXEL_SHIFT = -0.5


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 pinhole matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def colmap_to_opencv_intrinsics(K: np.ndarray) -> np.ndarray:
    """Shift the principal point from COLMAP's pixel-centre convention to OpenCV's."""
    K = np.array(K, dtype=np.float64)
    K[:2, 2] += COLMAP_TO_OPENCV_PIXEL_SHIFT
    return K


def opencv_to_colmap_intrinsics(K: np.ndarray) -> np.ndarray:
    """Shift the principal point from OpenCV's pixel-centre convention to COLMAP's."""
    K = np.array(K, dtype=np.float64)
    K[:2, 2] -= COLMAP_TO_OPENCV_PIXEL_SHIFT
    return K


def opencv_intrinsics(camera: pycolmap.Camera) -> np.ndarray:
    """3x3 intrinsics (OpenCV pixel convention) of a pinhole pycolmap camera."""
    return colmap_to_opencv_intrinsics(camera.calibration_matrix())


def rescale_intrinsics(K_opencv: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """Intrinsics (OpenCV convention) of the same camera after resizing the image by (scale_x, scale_y).

    Scaling is exact in COLMAP's convention (pixel corners scale), so convert, scale, convert back.
    """
    K = opencv_to_colmap_intrinsics(K_opencv)
    K[0] *= scale_x
    K[1] *= scale_y
    return colmap_to_opencv_intrinsics(K)


def rigid_to_matrix(rigid: pycolmap.Rigid3d) -> np.ndarray:
    """4x4 homogeneous matrix of a pycolmap rigid transform."""
    M = np.eye(4)
    M[:3, :4] = rigid.matrix()
    return M


def matrix_to_rigid(M: np.ndarray) -> pycolmap.Rigid3d:
    """pycolmap rigid transform from a 4x4 (or 3x4) matrix with an orthonormal rotation block."""
    M = np.asarray(M, dtype=np.float64)
    return pycolmap.Rigid3d(pycolmap.Rotation3d(M[:3, :3]), M[:3, 3])


def cam2world_from_cam_from_world(cam_from_world: pycolmap.Rigid3d) -> np.ndarray:
    """4x4 camera-to-world matrix from a world-to-camera rigid transform."""
    return rigid_to_matrix(cam_from_world.inverse())


def cam_from_world_from_cam2world(cam2world: np.ndarray) -> pycolmap.Rigid3d:
    """World-to-camera rigid transform from a 4x4 camera-to-world matrix."""
    return matrix_to_rigid(cam2world).inverse()


def pose_errors(cam2world_a: np.ndarray, cam2world_b: np.ndarray) -> tuple[float, float]:
    """Camera-centre distance and rotation angle (degrees) between two cam2world matrices (angle computed via the
    rotation vector, precise near zero unlike arccos of the trace)."""
    angle = np.degrees(Rotation.from_matrix(cam2world_a[:3, :3].T @ cam2world_b[:3, :3]).magnitude())
    return float(np.linalg.norm(cam2world_a[:3, 3] - cam2world_b[:3, 3])), float(angle)


def values_at_pixels(image: np.ndarray, xy_opencv: np.ndarray) -> np.ndarray:
    """The image's values at the nearest pixel to each (x, y) in OpenCV pixel coordinates, clamped to the image."""
    u = np.clip(np.round(xy_opencv[:, 0]).astype(int), 0, image.shape[1] - 1)
    v = np.clip(np.round(xy_opencv[:, 1]).astype(int), 0, image.shape[0] - 1)
    return image[v, u]


def image_diagonal_px(camera: pycolmap.Camera) -> float:
    """Length of the image's diagonal in pixels: the scale of search radii given as a share of the image."""
    return float(np.hypot(camera.width, camera.height))


def unit_rays(origin: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unit directions (N, 3) from `origin` (one point (3,), or one per row (N, 3)) to the world points (N, 3)."""
    rays = points - origin
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)
