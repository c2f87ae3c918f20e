"""The on-disk layout of a data root, defined here and nowhere else: every folder and file name the stages read or
write, the aerial-vs-ground naming rule, and the `sfm_*` folder of a registration.

    <data root>/
        downloaded_data/<scene>.mp4 + <scene>.json      GES render (or downloaded_data/<scene>/footage/*.jpeg)
        data/<scene>/                                   one scene (stage 2 on; `--root_dir` of the original scripts)
            footage/<scene>_000.jpeg ...                stage 2: the frames
            <scene>.json                                stage 2: the tracking JSON aligned with the frames
            ge_cameras.json                             stage 2: metric cameras; written last (stage 2's marker)
            sparse_ge/                                  stage 2: the cameras as a COLMAP text model
            sfm_output_localization/sfm_<features>+<matcher>/
                features.h5, matches*.h5, pairs-*.txt   stage 4a: hloc formats
                aerial/, localized/ (+ -txt)            stage 4a: COLMAP models
                registration.json, timings.json,        stage 4a: figures and settings
                peak_memory.json
                dense_work/                             stage 4b: resumable work (raw depth maps)
                localized_dense_metric/                 stage 4b: images/, depths/<stem>.h5, sparse-txt/, dense.json
        megadepth_processed/<scene>/<subscene>/<photo>.{jpg,exr,npz}   stage 3 (run_pipeline.py's place for it)
        pairs/<scene>.npz                               run_pipeline.py: each scene's pair file (make_pairs)
        aerial_megadepth.npz                            run_pipeline.py: the pair file of all scenes
        aerial_megadepth_processed/                     run_pipeline.py: the export (training data; ExportRoot)
            <scene>/<image>.{jpg,exr,npz}               format dust3r (and .h5 depth: megadepth_scene_info)
            scene_info/<scene>.npz                      format megadepth_scene_info
            covisibility/<scene>.npz                    format covisibility
        reports/<scene>/report.json, index.html         reports

MegaDepth, as downloaded (stage 3's input; the sample scene writes the same):
    <MegaDepth root>/MegaDepth_v1_SfM/<scene>/sparse/manhattan/<subscene>/      COLMAP text model
    <MegaDepth root>/phoenix/S6/zl548/MegaDepth_v1/<scene>/dense<subscene>/{imgs/<name>, depths/<stem>.h5}

Image names: an aerial frame is `<scene>_<index>.jpeg` (GES's image-sequence naming); anything else is a ground photo,
named after its MegaDepth image plus the processed suffix (`123_abc_o.jpg` -> `123_abc_o.jpg.jpg`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_SCENE_LIST = PACKAGE_DIR.parent / "datasets_preprocess" / "megadepth_image_list.npz"  # the published scene list

DOWNLOADS_DIR = "downloaded_data"
SCENES_DIR = "data"
MEGADEPTH_PROCESSED_DIR = "megadepth_processed"
REPORTS_DIR = "reports"
PAIRS_DIR = "pairs"
PAIRS_FILE = "aerial_megadepth.npz"
EXPORT_DIR = "aerial_megadepth_processed"
SCENE_INFO_DIR = "scene_info"  # in the export folder
COVISIBILITY_DIR = "covisibility"  # in the export folder
INDEX_FILE = "index.html"
SCENE_LIST_FILE = "megadepth_image_list.npz"  # a data root's own scene list (the sample has one)

FOOTAGE_DIR = "footage"
CAMERAS_FILE = "ge_cameras.json"  # stage 2's marker, moved in last
SPARSE_GE_DIR = "sparse_ge"
LOCALIZATION_DIR = "sfm_output_localization"
SFM_PREFIX = "sfm_"
REGISTRATION_FILE = "registration.json"
TIMINGS_FILE = "timings.json"
PEAK_MEMORY_FILE = "peak_memory.json"
LOCALIZED_MODEL = "localized"
DENSE_WORK_DIR = "dense_work"
DENSE_DIR = "localized_dense_metric"
DENSE_REPORT = "dense.json"
IMAGES_DIR = "images"
DEPTHS_DIR = "depths"
SPARSE_TXT_DIR = "sparse-txt"

FEATURES_FILE = "features.h5"  # hloc formats (aerialmd.formats.hloc_h5)
AERIAL_MATCHES_FILE = "matches.h5"
GROUND_MATCHES_FILE = "matches-ground.h5"
AERIAL_PAIRS_FILE = "pairs-aerial.txt"
GROUND_PAIRS_FILE = "pairs-ground.txt"
DATABASE_FILE = "database.db"  # COLMAP database of the aerial triangulation
AERIAL_MODEL = "aerial"  # the aerial model (COLMAP binary); a model's text copy is `<model>-txt`
TEXT_MODEL_SUFFIX = "-txt"
UNDISTORTED_DIR = "undistorted"  # inside dense_work/: COLMAP's undistorter workspace (its own images/, sparse/)
RAW_DEPTHS_DIR = "raw"  # inside the undistorter workspace: the torch backend's raw depth maps, kept to resume
LINKED_INPUTS_DIR = "inputs"  # inside dense_work/: links to the registered images
WORK_SETTINGS_FILE = "settings.json"  # inside dense_work/: the settings its cached maps were made with
FOLDER_SETTINGS = "settings.json"  # in a folder filled file by file (an export scene): its settings marker

MEGADEPTH_SFM_DIR = "MegaDepth_v1_SfM"
MEGADEPTH_DENSE_ROOT = Path("phoenix", "S6", "zl548", "MegaDepth_v1")
MEGADEPTH_IMAGES_DIR = "imgs"
MEGADEPTH_DEPTHS_DIR = "depths"

PROCESSED_SUFFIX = ".jpg"  # appended to a MegaDepth image name by stage 3 (`x.jpg` -> `x.jpg.jpg`)
REPORT_FILE = "report.json"


def sfm_name(features: str, matcher: str) -> str:
    """The registration folder of a feature/matcher pair: `sfm_sift+nn-ratio`, `sfm_aliked+lightglue`."""
    return f"{SFM_PREFIX}{features}+{matcher}"


def text_model(model_dir: Path) -> Path:
    """The text copy of a COLMAP binary model folder (`aerial` -> `aerial-txt`)."""
    return model_dir.with_name(model_dir.name + TEXT_MODEL_SUFFIX)


def megadepth_sparse_dir(megadepth_root: Path, scene: str, subscene: str) -> Path:
    """The COLMAP text model of a MegaDepth subscene."""
    return megadepth_root / MEGADEPTH_SFM_DIR / scene / "sparse" / "manhattan" / subscene


def megadepth_dense_dir(megadepth_root: Path, scene: str, subscene: str) -> Path:
    """The folder holding a MegaDepth subscene's `imgs/` and `depths/`."""
    return megadepth_root / MEGADEPTH_DENSE_ROOT / scene / f"dense{subscene}"


def is_aerial(name: str, scene: str) -> bool:
    """An aerial frame of `scene` (`<scene>_<digits>.jpeg`, stage 2's naming); anything else is a ground photo."""
    return re.fullmatch(rf"{re.escape(scene)}_\d+\.jpe?g", name) is not None


@dataclasses.dataclass(frozen=True)
class DenseDir:
    """`localized_dense_metric/`: the dense model of one registration."""

    path: Path

    @property
    def images(self) -> Path:
        return self.path / IMAGES_DIR

    @property
    def depths(self) -> Path:
        return self.path / DEPTHS_DIR

    @property
    def sparse_txt(self) -> Path:
        return self.path / SPARSE_TXT_DIR

    @property
    def report(self) -> Path:
        return self.path / DENSE_REPORT


@dataclasses.dataclass(frozen=True)
class SfmDir:
    """`sfm_<features>+<matcher>/`: one registration of a scene and its dense model."""

    path: Path

    @property
    def registration(self) -> Path:
        return self.path / REGISTRATION_FILE

    @property
    def timings(self) -> Path:
        return self.path / TIMINGS_FILE

    @property
    def peak_memory(self) -> Path:
        return self.path / PEAK_MEMORY_FILE

    @property
    def localized_model(self) -> Path:
        return self.path / LOCALIZED_MODEL

    @property
    def dense_work(self) -> Path:
        return self.path / DENSE_WORK_DIR

    @property
    def dense(self) -> DenseDir:
        return DenseDir(self.path / DENSE_DIR)


@dataclasses.dataclass(frozen=True)
class SceneDir:
    """`data/<scene>/`: one scene's stage-2 outputs and its registrations."""

    path: Path

    @property
    def scene_id(self) -> str:
        return self.path.name

    @property
    def footage(self) -> Path:
        return self.path / FOOTAGE_DIR

    @property
    def tracking_json(self) -> Path:
        return self.path / f"{self.scene_id}.json"

    @property
    def cameras(self) -> Path:
        return self.path / CAMERAS_FILE

    @property
    def sparse_ge(self) -> Path:
        return self.path / SPARSE_GE_DIR

    @property
    def localization(self) -> Path:
        return self.path / LOCALIZATION_DIR

    def sfm(self, name: str) -> SfmDir:
        return SfmDir(self.localization / name)

    def sfm_dirs(self) -> list[SfmDir]:
        """The registrations present, sorted by name."""
        if not self.localization.is_dir():
            return []
        return [SfmDir(p) for p in sorted(self.localization.glob(f"{SFM_PREFIX}*")) if p.is_dir()]


@dataclasses.dataclass(frozen=True)
class DataRoot:
    """A data root: GES downloads in, scene folders, processed MegaDepth and reports out."""

    path: Path

    @property
    def downloads(self) -> Path:
        return self.path / DOWNLOADS_DIR

    def video(self, scene: str) -> Path:
        return self.downloads / f"{scene}.mp4"

    def tracking_json(self, scene: str) -> Path:
        return self.downloads / f"{scene}.json"

    def image_sequence(self, scene: str) -> Path:
        return self.downloads / scene / FOOTAGE_DIR

    def tracking_json_candidates(self, scene: str) -> list[Path]:
        """Where a scene's tracking JSON may be: next to its video, or inside its image-sequence folder."""
        return [self.tracking_json(scene), self.downloads / scene / f"{scene}.json"]

    def has_download(self, scene: str) -> bool:
        """Something was downloaded for the scene (complete or not)."""
        return (self.video(scene).exists() or self.image_sequence(scene).is_dir()
                or any(p.is_file() for p in self.tracking_json_candidates(scene)))

    @property
    def scenes(self) -> Path:
        """`data/`: the folder the original scripts call --root_dir / --megadepth_aerial_dir."""
        return self.path / SCENES_DIR

    def scene(self, scene: str) -> SceneDir:
        return SceneDir(self.scenes / scene)

    @property
    def megadepth_processed(self) -> Path:
        return self.path / MEGADEPTH_PROCESSED_DIR

    @property
    def scene_list(self) -> Path:
        return self.path / SCENE_LIST_FILE

    @property
    def pairs_dir(self) -> Path:
        return self.path / PAIRS_DIR

    def scene_pairs(self, scene: str) -> Path:
        """One scene's pair file, as run_pipeline.py writes it (make_pairs of that scene alone)."""
        return self.pairs_dir / f"{scene}.npz"

    @property
    def pairs_file(self) -> Path:
        """The pair file of every scene (the scenes' files merged)."""
        return self.path / PAIRS_FILE

    @property
    def export(self) -> Path:
        """The exported training data: `<export>/<scene>/<image>.{jpg,exr,npz}`."""
        return self.path / EXPORT_DIR

    @property
    def reports(self) -> Path:
        return self.path / REPORTS_DIR

    def report_dir(self, scene: str) -> Path:
        return self.reports / scene

    @property
    def index(self) -> Path:
        return self.path / INDEX_FILE


@dataclasses.dataclass(frozen=True)
class ExportRoot:
    """An export folder (stage 5, aerialmd.stages.export): per-image files in one folder per scene, and the scene-level
    files of the other formats in a folder per format."""

    path: Path

    def scene(self, scene: str) -> Path:
        return self.path / scene

    def scene_info(self, scene: str) -> Path:
        return self.path / SCENE_INFO_DIR / f"{scene}.npz"

    def covisibility(self, scene: str) -> Path:
        return self.path / COVISIBILITY_DIR / f"{scene}.npz"
