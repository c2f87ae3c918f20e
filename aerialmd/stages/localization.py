"""Stage 4a: sparse aerial model from the known GES poses, and MegaDepth photos registered into it at metric scale.

Per scene, into `<root_dir>/<scene>/sfm_output_localization/sfm_<features>+<matcher>/` (written under a temporary
name and renamed when complete):
    features.h5, matches*.h5, pairs*.txt     hloc formats (aerialmd/formats/hloc_h5.py)
    database.db                               COLMAP database of the aerial model
    aerial/, aerial-txt/                      aerial model: GES cameras (unchanged) + triangulated points
    localized/, localized-txt/                aerial model + registered ground photos (binary and text)
    registration.json                         per-photo status, inliers, pose checks; the scene Sim(3); statistics
    timings.json                              seconds per step
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap

from aerialmd.atomic import atomic_dir
from aerialmd.formats.hloc_h5 import keypoints_to_colmap, read_features, write_pairs
from aerialmd.layout import (
    AERIAL_MODEL,
    CAMERAS_FILE,
    FEATURES_FILE,
    GROUND_MATCHES_FILE,
    GROUND_PAIRS_FILE,
    LOCALIZATION_DIR,
    LOCALIZED_MODEL,
    REGISTRATION_FILE,
    SPARSE_GE_DIR,
    TIMINGS_FILE,
    sfm_name,
    text_model,
)
from aerialmd.run.markers import MADE_FROM_KEY, SETTINGS_KEY, cameras_fingerprint, is_finished, is_preprocessed
from aerialmd.run.scenes import Shard, Timer, load_scene_list, run_per_scene, select_scenes
from aerialmd.sfm.features import FeatureConf, ImageInput, extract_features
from aerialmd.sfm.matching import MatcherConf, match_pairs, resolve_configs
from aerialmd.sfm.registration import (
    POSE_PREDICTED,
    STATUS_REJECTED,
    Correspondences,
    GroundPhoto,
    PhotoResult,
    RegistrationConf,
    SceneRegistration,
    absolute_pose,
    aerial_frames_seeing,
    aerial_point_descriptors,
    anchor_correspondences,
    correspondences_2d3d,
    estimate_scene_sim3,
    evenly_spaced,
    judge,
    load_ground_photos,
    localize_photo,
    matches_near_pose,
    photo_depth_points,
    place_registered_photos,
    point3D_ids_per_keypoint,
    predict_cam2world,
    scene_extent,
    spread_subset,
)
from aerialmd.sfm.triangulation import (
    TriangulationConf,
    assert_poses_unchanged,
    build_aerial_model,
    model_statistics,
)
from aerialmd.stages.preprocess_megadepth import outputs_fingerprint

STAGE = "localization"


def register_photos(model: pycolmap.Reconstruction, photos: list[GroundPhoto], work_dir: Path,
                    feature_conf: FeatureConf, matcher_conf: MatcherConf, conf: RegistrationConf,
                    timer: Timer) -> SceneRegistration:
    """Anchors -> scene Sim(3) -> pose-guided matching -> per-photo PnP judged against the prediction."""
    features, matches = work_dir / FEATURES_FILE, work_dir / GROUND_MATCHES_FILE
    with timer.step("extraction"):
        extract_features([ImageInput(p.name, p.path) for p in photos], features, feature_conf)
    extent = scene_extent(model)
    point_ids = point3D_ids_per_keypoint(model)
    aerial = sorted(image.name for image in model.images.values())
    anchors = [photos[i] for i in spread_subset(np.array([p.cam2world_sfm[:3, 3] for p in photos]), conf.num_anchors)]
    anchor_pairs = [(p.name, a) for p in anchors for a in evenly_spaced(aerial, conf.max_anchor_pairs)]
    with timer.step("matching"):
        match_pairs(anchor_pairs, features, matches, matcher_conf)
    with timer.step("registration"):
        src, dst = [], []
        for photo in anchors:
            corr = correspondences_2d3d(photo.name, aerial, features, matches, model, point_ids)
            s, d = anchor_correspondences(photo, corr, absolute_pose(photo.camera, corr, conf), conf)
            src.append(s)
            dst.append(d)
        src_all, dst_all = np.concatenate(src), np.concatenate(dst)
        if len(src_all) < 10:
            raise RuntimeError(f"anchor photos gave only {len(src_all)} 3D-3D matches; cannot place the MegaDepth scene")
        sim3, sim3_inliers = estimate_scene_sim3(src_all, dst_all, conf.sim3_max_error_fraction * extent, conf.seed)
        predictions = [predict_cam2world(sim3, p.cam2world_sfm) for p in photos]
        guided = {p.name: aerial_frames_seeing(photo_depth_points(p, sim3), model, conf.guided_pairs) for p in photos}
    guided_pairs = [(name, a) for name, frames in guided.items() for a in frames]
    write_pairs(work_dir / GROUND_PAIRS_FILE, sorted(set(anchor_pairs) | set(guided_pairs)))
    with timer.step("matching"):
        match_pairs(guided_pairs, features, matches, matcher_conf)
    with timer.step("registration"):
        points = aerial_point_descriptors(model, features)
        results, pair_matches, pnp_inlier_matches = [], [], []
        for photo, prediction in zip(photos, predictions):
            pair_matches.append(correspondences_2d3d(photo.name, guided[photo.name], features, matches, model,
                                                     point_ids))
            corr, found = localize_photo(photo, prediction, pair_matches[-1], points, features, conf)
            results.append(judge(prediction, found, corr, extent, conf, photo.name))
            pnp_inlier_matches.append(None if found is None else corr.subset(found[1]))
        refined_on = 0
        if conf.registered_pose == POSE_PREDICTED:
            def matches_around(index: int, cam2world: np.ndarray) -> Correspondences:
                return matches_near_pose(photos[index], cam2world, pair_matches[index], points, features, conf)

            sim3, refined_on = place_registered_photos(sim3, photos, results, pnp_inlier_matches, matches_around,
                                                       conf)
    return SceneRegistration(sim3, sim3_inliers, len(src_all), refined_on, [p.name for p in anchors], results, extent)


def localized_model(aerial_dir: Path, photos: list[GroundPhoto], results: list[PhotoResult],
                    features_path: Path) -> pycolmap.Reconstruction:
    """The aerial model plus every registered photo, with its keypoints and its inlier observations of aerial points."""
    model = pycolmap.Reconstruction(str(aerial_dir))
    next_id = max(max(model.cameras), max(model.images)) + 1
    for offset, (photo, result) in enumerate(zip(photos, results)):
        if result.status == STATUS_REJECTED:
            continue
        ident = next_id + offset
        camera = pycolmap.Camera(model=photo.camera.model, width=photo.camera.width, height=photo.camera.height,
                                 params=photo.camera.params, camera_id=ident)
        model.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=photo.name, camera_id=ident, image_id=ident)
        keypoints = keypoints_to_colmap(read_features(features_path, photo.name).keypoints)
        image.points2D = pycolmap.Point2DList([pycolmap.Point2D(xy) for xy in keypoints])
        model.add_image_with_trivial_frame(image, result.cam_from_world)
        used_points: set[int] = set()
        used_keypoints: set[int] = set()
        for kp, pid in zip(result.inlier_keypoints.tolist(), result.inlier_point3D_ids.tolist()):
            if kp in used_keypoints or pid in used_points:
                continue
            used_keypoints.add(kp)
            used_points.add(pid)
            model.add_observation(pid, pycolmap.TrackElement(ident, kp))
    return model


def write_model(model: pycolmap.Reconstruction, binary_dir: Path, text_dir: Path) -> None:
    """A COLMAP model as binary and as text."""
    binary_dir.mkdir(parents=True, exist_ok=True)
    text_dir.mkdir(parents=True, exist_ok=True)
    model.write_binary(str(binary_dir))
    model.write_text(str(text_dir))


@dataclasses.dataclass(frozen=True)
class LocalizationConf:
    """Settings of stage 4a, recorded in registration.json (all but the device; other settings need --overwrite)."""

    features: str = "sift"  # sift (CPU) | aliked (CPU or CUDA), or a matching.CONFIGS name
    matcher: str | None = None  # None: the natural matcher of the features (nn-ratio, lightglue)
    max_keypoints: int | None = None  # None: the feature's default (FeatureConf)
    resize_max: int | None = None  # long image side during extraction; None: full size
    device: str = "auto"  # ALIKED and LightGlue: auto (CUDA when there), cpu, cuda, ...
    triangulation: TriangulationConf = TriangulationConf()
    registration: RegistrationConf = RegistrationConf()

    def feature_and_matcher(self) -> tuple[FeatureConf, MatcherConf]:
        """The FeatureConf and MatcherConf these settings name (ValueError for an unsupported combination)."""
        feature_conf, matcher_conf = resolve_configs(self.features, self.matcher)
        feature_conf = dataclasses.replace(feature_conf, max_keypoints=self.max_keypoints or feature_conf.max_keypoints,
                                           resize_max=self.resize_max or feature_conf.resize_max, device=self.device)
        return feature_conf, dataclasses.replace(matcher_conf, device=self.device)

    def output_name(self) -> str:
        """The registration folder: `sfm_<features>+<matcher>`."""
        feature_conf, matcher_conf = self.feature_and_matcher()
        return sfm_name(feature_conf.name, matcher_conf.name)

    def settings(self) -> dict:
        """What determines the outputs (devices do not), as recorded in registration.json."""
        def without_device(config: Any) -> dict:
            return {k: v for k, v in dataclasses.asdict(config).items() if k != "device"}

        feature_conf, matcher_conf = self.feature_and_matcher()
        return {"features": without_device(feature_conf), "matcher": without_device(matcher_conf),
                "registration": dataclasses.asdict(self.registration),
                "triangulation": dataclasses.asdict(self.triangulation)}


# Settings added to registration.json after outputs were made without them: such an output counts as made with these.
ADDED_SETTINGS = {"triangulation": dataclasses.asdict(TriangulationConf())}


def localize_scene(scene_dir: Path, processed_dirs: dict[str, Path], subscene_images: dict[str, list[str]],
                   conf: LocalizationConf = LocalizationConf(), overwrite: bool = False) -> str | None:
    """Run stage 4a on one scene; returns a one-line summary, or None when the output exists (and not overwrite)."""
    feature_conf, matcher_conf = conf.feature_and_matcher()
    out_dir = scene_dir / LOCALIZATION_DIR / conf.output_name()
    settings = conf.settings()
    inputs = {**cameras_fingerprint(scene_dir), **outputs_fingerprint(processed_dirs, subscene_images)}
    if not overwrite and is_finished(out_dir / REGISTRATION_FILE, settings, inputs, ADDED_SETTINGS):
        return None
    reference = pycolmap.Reconstruction(str(scene_dir / SPARSE_GE_DIR))
    photos, missing = [], []
    for subscene, names in sorted(subscene_images.items()):
        found, absent = load_ground_photos(processed_dirs[subscene], names)
        photos += found
        missing += absent
    if not photos:
        raise FileNotFoundError(f"no preprocessed MegaDepth photos for {scene_dir.name} (run preprocess_megadepth)")
    timer = Timer()
    with atomic_dir(out_dir) as tmp:
        aerial, aerial_stats = build_aerial_model(scene_dir, tmp, feature_conf, matcher_conf,
                                                  conf=conf.triangulation)
        timer.seconds.update(aerial_stats.get("timings", {}))
        registration = register_photos(aerial, photos, tmp, feature_conf, matcher_conf, conf.registration, timer)
        model = localized_model(tmp / AERIAL_MODEL, photos, registration.results, tmp / FEATURES_FILE)
        assert_poses_unchanged(reference, model)
        write_model(model, tmp / LOCALIZED_MODEL, text_model(tmp / LOCALIZED_MODEL))
        document = registration.to_json()
        document.update({SETTINGS_KEY: settings, MADE_FROM_KEY: inputs, "aerial_model": model_statistics(aerial),
                         "localized_model": model_statistics(model),
                         "missing_photos": missing, "features": feature_conf.name, "matcher": matcher_conf.name})
        (tmp / REGISTRATION_FILE).write_text(json.dumps(document, indent=1))
        (tmp / TIMINGS_FILE).write_text(json.dumps(timer.seconds, indent=1))
    counts = document["counts"]
    return (f"{counts['registered'] + counts['individual']}/{len(photos)} photos registered "
            f"({counts['individual']} individually, {counts['rejected']} rejected), "
            f"Sim(3) scale {document['sim3_metric_from_sfm']['scale']:.4g}")


def localize(root_dir: Path | str, megadepth_processed: Path | str, image_list: Path | str,
             scenes: list[str] | None = None, conf: LocalizationConf = LocalizationConf(), overwrite: bool = False,
             shard: Shard | None = None) -> int:
    """Run stage 4a over the scene list (scenes without stage-2 output are passed over unless requested): `root_dir`
    is the data root's scene folder (`<data root>/data`), `megadepth_processed` stage 3's output."""
    root_dir, megadepth_processed = Path(root_dir), Path(megadepth_processed)
    pycolmap.logging.minloglevel = pycolmap.logging.WARNING  # COLMAP's per-image INFO lines would drown the report
    conf.feature_and_matcher()  # an unsupported combination fails before any scene
    scene_images = load_scene_list(image_list)
    selected = select_scenes(scene_images, scenes, shard)

    def process(scene: str) -> str | None:
        scene_dir = root_dir / scene
        if not is_preprocessed(scene_dir):
            if scenes:
                raise FileNotFoundError(f"{scene_dir / CAMERAS_FILE}: no finished stage-2 output (run preprocess_ge)")
            return None
        processed = {sub: megadepth_processed / scene / sub for sub in scene_images[scene]}
        summary = localize_scene(scene_dir, processed, scene_images[scene], conf, overwrite)
        return summary or "already done (use --overwrite to redo)"

    report = run_per_scene(STAGE, selected, process)
    print(report.summary(), flush=True)
    return report.exit_code()
