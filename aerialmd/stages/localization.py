"""Stage 4a: sparse aerial model from the known GES poses, and MegaDepth photos registered into it at metric scale.

Per scene, into `<root_dir>/<scene>/sfm_output_localization/sfm_<features>+<matcher>/` (written under a temporary
name and renamed when complete):
    features.h5, matches*.h5, pairs*.txt     hloc formats (aerialmd/formats/hloc_h5.py)
    database.db                               COLMAP database of the aerial model
    aerial/, aerial-txt/                      aerial model: GES cameras (unchanged) + triangulated points
    localized/, localized-txt/                aerial model + registered ground photos (binary and text)
    registration.json                         per-photo status, inliers, pose checks; the scene Sim(3); statistics
    timings.json                              seconds per step
    peak_memory.json                          peak resident memory per step (MB)
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
    FOOTAGE_DIR,
    GROUND_MATCHES_FILE,
    GROUND_PAIRS_FILE,
    LOCALIZATION_DIR,
    LOCALIZED_MODEL,
    PEAK_MEMORY_FILE,
    REGISTRATION_FILE,
    SPARSE_GE_DIR,
    TIMINGS_FILE,
    sfm_name,
    text_model,
)
from aerialmd.run.markers import MADE_FROM_KEY, SETTINGS_KEY, cameras_fingerprint, is_finished, is_preprocessed
from aerialmd.run.scenes import Shard, Timer, load_scene_list, run_per_scene, select_scenes
from aerialmd.sfm.aerial_views import AerialScene, confirm_through_aerial_views
from aerialmd.sfm.features import FeatureConf, ImageInput, extract_features
from aerialmd.sfm.matching import MatcherConf, match_pairs, resolve_configs
from aerialmd.sfm.photo_neighbours import confirm_through_neighbours
from aerialmd.sfm.registration import (
    POSE_PREDICTED,
    STATUS_REJECTED,
    Correspondences,
    GroundPhoto,
    PhotoResult,
    RegistrationConf,
    SceneRegistration,
    aerial_frames_seeing,
    aerial_point_descriptors,
    correspondences_2d3d,
    evenly_spaced,
    guided_radius_px,
    judge,
    keep_predicted_pose,
    load_ground_photos,
    localize_photo,
    matches_near_pose,
    photo_depth_points,
    place_registered_photos,
    point3D_ids_per_keypoint,
    pooled_sim3,
    predict_cam2world,
    refine_scene_sim3,
    scene_extent,
    spread_order,
)
from aerialmd.sfm.triangulation import (
    TriangulationConf,
    assert_poses_unchanged,
    build_aerial_model,
    model_statistics,
)
from aerialmd.stages.preprocess_megadepth import outputs_fingerprint

STAGE = "localization"


def register_photos(model: pycolmap.Reconstruction, footage: Path, photos: list[GroundPhoto], work_dir: Path,
                    feature_conf: FeatureConf, matcher_conf: MatcherConf, conf: RegistrationConf,
                    timer: Timer) -> SceneRegistration:
    """Anchors -> scene Sim(3) -> pose-guided matching -> Sim(3) from all photos, refined -> predicted poses confirmed
    by each photo's own matches to the aerial points (aerialmd/sfm/registration.py), then, for the photos left
    (with the `predicted` pose only), by the aerial frames (in `footage`) warped to their viewpoint
    (aerialmd/sfm/aerial_views.py), then by the registered photos (aerialmd/sfm/photo_neighbours.py)."""
    features, matches = work_dir / FEATURES_FILE, work_dir / GROUND_MATCHES_FILE
    with timer.step("extraction"):
        extract_features([ImageInput(p.name, p.path) for p in photos], features, feature_conf)
    extent = scene_extent(model)
    point_ids = point3D_ids_per_keypoint(model)
    anchors = scene_anchors(model, point_ids, photos, features, matches, matcher_conf, conf, timer, extent)
    with timer.step("registration"):
        guided = {p.name: aerial_frames_seeing(photo_depth_points(p, anchors.sim3),
                                               predict_cam2world(anchors.sim3, p.cam2world_sfm)[:3, 3], model,
                                               conf.guided_pairs)
                  for p in photos}
    guided_pairs = [(name, a) for name, frames in guided.items() for a in frames]
    write_pairs(work_dir / GROUND_PAIRS_FILE, sorted(set(anchors.pairs) | set(guided_pairs)))
    with timer.step("matching"):
        match_pairs(guided_pairs, features, matches, matcher_conf)
    with timer.step("registration"):
        frames = {name: sorted(set(frames) | set(anchors.frames.get(name, []))) for name, frames in guided.items()}
        pair_matches = [correspondences_2d3d(p.name, frames[p.name], features, matches, model, point_ids)
                        for p in photos]
        sim3, sim3_inliers, refined_on = refined_scene_sim3(photos, pair_matches, anchors, conf, extent)
        points = aerial_point_descriptors(model, features, max_per_cell=conf.max_points_per_cell,
                                          cell_fraction=conf.guided_radius_fraction)
        results, wide_matches = [], []
        for photo, pairs in zip(photos, pair_matches):
            prediction = predict_cam2world(sim3, photo.cam2world_sfm)
            wide_matches.append(matches_near_pose(photo, prediction, pairs, points, features,
                                                  guided_radius_px(photo, conf)))
            corr, found = localize_photo(photo, wide_matches[-1], pairs, points, features, conf)
            results.append(judge(prediction, found, corr, extent, conf, photo.name))
        registration = SceneRegistration(sim3, sim3_inliers, anchors.correspondences, refined_on, anchors.names,
                                         results, extent)  # the later steps register more of `results`
        if conf.registered_pose != POSE_PREDICTED:
            return registration

        def matches_around(index: int, cam2world: np.ndarray) -> Correspondences:
            return matches_near_pose(photos[index], cam2world, pair_matches[index], points, features,
                                     conf.refine_radius_px)

        def keep(index: int) -> None:
            pose = predict_cam2world(sim3, photos[index].cam2world_sfm)
            keep_predicted_pose(results[index], photos[index].camera, pose, matches_around(index, pose), conf)

        place_registered_photos(sim3, photos, results, wide_matches, matches_around, conf)
    with timer.step("aerial views"):
        confirm_through_aerial_views(photos, results, AerialScene(model, footage, sim3), features,
                                     feature_conf, keep, conf)
    with timer.step("registration"):
        confirm_through_neighbours(photos, results, features, keep, conf)
    return registration


def refined_scene_sim3(photos: list[GroundPhoto], pair_matches: list[Correspondences], anchors: "SceneAnchors",
                       conf: RegistrationConf, extent: float) -> tuple[pycolmap.Sim3d, int, int]:
    """The Sim(3) from every photo's matches pooled (the anchors' when that finds fewer inliers), refined on the
    matches it verified; with its inlier count and the number of photos it was refined on."""
    pooled = pooled_sim3(photos, pair_matches, conf.sim3_max_error_fraction * extent, conf.seed)
    if pooled is None or pooled[1] < anchors.inliers:
        return anchors.sim3, anchors.inliers, 0
    sim3, inliers, verified = pooled
    chosen = [i for i, corr in enumerate(verified) if len(corr.xy)]
    return refine_scene_sim3(sim3, [photos[i] for i in chosen], [verified[i] for i in chosen]), inliers, len(chosen)


@dataclasses.dataclass
class SceneAnchors:
    """The first scene Sim(3), from the anchor photos: its inliers among their pooled 3D-3D pairs, how many pairs,
    the anchors, the aerial frames each was matched to and those pairs."""

    sim3: pycolmap.Sim3d
    inliers: int
    correspondences: int
    names: list[str]
    frames: dict[str, list[str]]
    pairs: list[tuple[str, str]]


def scene_anchors(model: pycolmap.Reconstruction, point_ids: dict[str, np.ndarray], photos: list[GroundPhoto],
                  features: Path, matches: Path, matcher_conf: MatcherConf, conf: RegistrationConf, timer: Timer,
                  extent: float) -> SceneAnchors:
    """Anchor photos in batches of conf.num_anchors (spread over the scene) matched to the aerial frames, until their
    pooled 3D-3D pairs give a Sim(3) with conf.min_sim3_inliers inliers or every photo is an anchor (`point_ids`:
    point3D_ids_per_keypoint of the model)."""
    aerial = evenly_spaced(sorted(image.name for image in model.images.values()), conf.max_anchor_pairs)
    order = spread_order(np.array([p.cam2world_sfm[:3, 3] for p in photos]))
    anchors: list[GroundPhoto] = []
    found: list[Correspondences] = []
    pooled = None
    for start in range(0, len(order), conf.num_anchors):
        batch = [photos[i] for i in order[start:start + conf.num_anchors]]
        with timer.step("matching"):
            match_pairs([(p.name, a) for p in batch for a in aerial], features, matches, matcher_conf)
        with timer.step("registration"):
            anchors += batch
            found += [correspondences_2d3d(p.name, aerial, features, matches, model, point_ids) for p in batch]
            pooled = pooled_sim3(anchors, found, conf.sim3_max_error_fraction * extent, conf.seed) or pooled
        if pooled is not None and pooled[1] >= conf.min_sim3_inliers:
            break
    matched = sum(len(corr.xy) for corr in found)
    if pooled is None:
        raise RuntimeError(f"the {len(anchors)} anchor photos gave no consistent Sim(3) from their {matched} 2D-3D "
                           "matches; cannot place the MegaDepth scene")
    names = [p.name for p in anchors]
    return SceneAnchors(pooled[0], pooled[1], matched, names, {name: aerial for name in names},
                        [(name, a) for name in names for a in aerial])


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

    features: str = "auto"  # auto: aliked on CUDA, else sift | sift | aliked, or a matching.CONFIGS name
    matcher: str | None = None  # None: the natural matcher of the features (nn-ratio, lightglue)
    max_keypoints: int | None = None  # None: the feature's default (FeatureConf)
    resize_max: int | None = None  # long image side during extraction; None: full size
    device: str = "auto"  # ALIKED and LightGlue: auto (CUDA when there), cpu, cuda, ...
    triangulation: TriangulationConf = TriangulationConf()
    registration: RegistrationConf = RegistrationConf()

    def feature_and_matcher(self) -> tuple[FeatureConf, MatcherConf]:
        """The FeatureConf and MatcherConf these settings name (ValueError for an unsupported combination)."""
        feature_conf, matcher_conf = resolve_configs(self.features, self.matcher, self.device)
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
        aerial, _ = build_aerial_model(scene_dir, tmp, feature_conf, matcher_conf, conf=conf.triangulation, timer=timer)
        registration = register_photos(aerial, scene_dir / FOOTAGE_DIR, photos, tmp, feature_conf, matcher_conf,
                                       conf.registration, timer)
        model = localized_model(tmp / AERIAL_MODEL, photos, registration.results, tmp / FEATURES_FILE)
        assert_poses_unchanged(reference, model)
        write_model(model, tmp / LOCALIZED_MODEL, text_model(tmp / LOCALIZED_MODEL))
        document = registration.to_json()
        document.update({SETTINGS_KEY: settings, MADE_FROM_KEY: inputs, "aerial_model": model_statistics(aerial),
                         "localized_model": model_statistics(model),
                         "missing_photos": missing, "features": feature_conf.name, "matcher": matcher_conf.name})
        (tmp / REGISTRATION_FILE).write_text(json.dumps(document, indent=1))
        (tmp / TIMINGS_FILE).write_text(json.dumps(timer.seconds, indent=1))
        (tmp / PEAK_MEMORY_FILE).write_text(json.dumps(timer.peak_rss_mb, indent=1))
    counts = document["counts"]
    return (f"{counts['registered']}/{len(photos)} photos registered ({counts['rejected']} rejected), "
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
