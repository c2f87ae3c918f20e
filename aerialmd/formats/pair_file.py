"""The AerialMegaDepth pair file: its one reader, writer and checks (numpy only, so exporter and loader both use it).

Pair file (npz; the published `aerial_megadepth_{train,val}.npz`, make_pairs' output and DUSt3R's MegaDepth metadata):
    scenes              (S,) str              scene ids
    images              (I,) str, or object with None entries (images without data in the published files)
    images_scene_name   (I,) str              scene id of each image (optional: inferred from the pairs when absent)
    pairs               (P, 4) object or numeric rows [scene index, image index 1, image index 2, score] (indices into
                        scenes and images; images are global, not per scene), or a structured array with fields
                        scene_id, im1_id, im2_id, score

Readers: `load_pair_file` (the whole content as a `PairFile`, checked for keys, shapes and index ranges) and
`read_pair_file` (the pairs as `Pair(scene, im1, im2, score)` with names resolved, for the training loader, which also
refuses pairs naming a None image or an image of another scene). Writer: `save_pair_file` (the published layout).
Every error is one line that starts with the file's path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from aerialmd.atomic import atomic_file

PAIR_FIELDS = ("scene_id", "im1_id", "im2_id", "score")
REQUIRED_KEYS = ("scenes", "images", "pairs")

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # scene_id, im1_id, im2_id (int64), score (float64)


class Pair(NamedTuple):
    """One training pair: scene id and the two image ids (file names without the .jpg/.exr/.npz suffix)."""

    scene: str
    im1: str
    im2: str
    score: float


@dataclasses.dataclass(frozen=True)
class SceneBlock:
    """One scene's part of a pair file: its image names, pairs as (i, j) indices into them, and their scores."""

    scene: str
    names: list[str]
    pairs: np.ndarray
    scores: np.ndarray


@dataclasses.dataclass
class PairFile:
    """A pair file's content: scene ids, global image names (None = no data) with their scene, and the pairs as
    parallel arrays (scene index, image indices, score). `scene_names_inferred` is True when the file had no
    images_scene_name and images_scene_name was derived from the pairs (None for images in no pair)."""

    scenes: list[str]
    images: list[str | None]
    images_scene_name: list[str | None]
    scene_id: np.ndarray
    im1_id: np.ndarray
    im2_id: np.ndarray
    score: np.ndarray
    scene_names_inferred: bool = False

    @classmethod
    def from_rows(cls, scenes: Sequence[str], images: Sequence[str | None], images_scene_name: Sequence[str | None],
                  rows: Sequence[tuple[int, int, int, float]]) -> "PairFile":
        """A PairFile from rows (scene index, image index 1, image index 2, score)."""
        columns = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return cls(list(scenes), list(images), list(images_scene_name), columns[:, 0].astype(np.int64),
                   columns[:, 1].astype(np.int64), columns[:, 2].astype(np.int64), columns[:, 3])

    @classmethod
    def from_scene_blocks(cls, blocks: Sequence[SceneBlock]) -> "PairFile":
        """A PairFile of whole scenes, in scene-id order: every image of each scene, pairs as global indices."""
        scenes, images, image_scenes, rows = [], [], [], []
        for scene_index, block in enumerate(sorted(blocks, key=lambda b: b.scene)):
            offset = len(images)
            scenes.append(block.scene)
            images += block.names
            image_scenes += [block.scene] * len(block.names)
            rows += [(scene_index, offset + int(i), offset + int(j), float(score))
                     for (i, j), score in zip(block.pairs, block.scores)]
        return cls.from_rows(scenes, images, image_scenes, rows)

    def scene_blocks(self) -> list[SceneBlock]:
        """The file split into its scenes (images named, pairs in scene-local indices); ValueError when a pair has an
        unnamed image."""
        blocks = []
        for scene_index, scene in enumerate(self.scenes):
            members = [i for i, owner in enumerate(self.images_scene_name) if owner == scene and self.images[i]]
            local = {global_index: k for k, global_index in enumerate(members)}
            rows = np.flatnonzero(self.scene_id == scene_index)
            if any(int(self.im1_id[r]) not in local or int(self.im2_id[r]) not in local for r in rows):
                raise ValueError(f"scene {scene}: a pair refers to an unnamed image or one of another scene")
            pairs = np.array([(local[int(self.im1_id[r])], local[int(self.im2_id[r])]) for r in rows],
                             np.int64).reshape(-1, 2)
            blocks.append(SceneBlock(scene, [str(self.images[i]) for i in members], pairs, self.score[rows]))
        return blocks

    def images_by_scene(self) -> dict[str, list[str]]:
        """Scene id -> its (non-None) image names, in file order, without duplicates; every scene listed."""
        out: dict[str, list[str]] = {scene: [] for scene in self.scenes}
        for name, scene in zip(self.images, self.images_scene_name):
            if name is not None and scene is not None:
                out.setdefault(scene, []).append(name)
        return {scene: list(dict.fromkeys(names)) for scene, names in out.items()}


# ----------------------------------------------------------------------------------------------------------------------
# Checks


def _first_bad(mask: np.ndarray) -> int | None:
    """Index of the first True of a boolean array, None when there is none."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _check_range(path: Path | str, what: str, ids: np.ndarray, count: int) -> None:
    """ValueError naming the first pair whose `what` index is outside 0..count-1."""
    k = _first_bad((ids < 0) | (ids >= count))
    if k is not None:
        raise ValueError(f"{path}: {what} index out of range in pair {k}: {ids[k]} (file has {count} {what}s)")


def _check_indices(path: Path | str, n_scenes: int, n_images: int, scene_id: np.ndarray, im1: np.ndarray,
                   im2: np.ndarray) -> None:
    """ValueError (naming `path`) when the pair columns differ in length or an index points outside its array."""
    lengths = sorted({len(scene_id), len(im1), len(im2)})
    if len(lengths) != 1:
        raise ValueError(f"{path}: pair columns differ in length ({', '.join(map(str, lengths))})")
    _check_range(path, "scene", scene_id, n_scenes)
    for ids in (im1, im2):
        _check_range(path, "image", ids, n_images)


def _check_lengths(pair_file: PairFile, path: Path | str) -> None:
    """ValueError (naming `path`) when images_scene_name or score does not match images or the pair columns."""
    if len(pair_file.images_scene_name) != len(pair_file.images):
        raise ValueError(f"{path}: {len(pair_file.images_scene_name)} images_scene_name entries "
                         f"for {len(pair_file.images)} images")
    if len(pair_file.score) != len(pair_file.scene_id):
        raise ValueError(f"{path}: {len(pair_file.score)} scores for {len(pair_file.scene_id)} pairs")


def check_pair_file(pair_file: PairFile, path: Path | str) -> None:
    """ValueError (naming `path`) when the arrays disagree in length or a pair index points outside its array."""
    _check_lengths(pair_file, path)
    _check_indices(path, len(pair_file.scenes), len(pair_file.images), pair_file.scene_id, pair_file.im1_id,
                   pair_file.im2_id)


def _check_pair_names(pair_file: PairFile, path: Path | str, k: int) -> None:
    """ValueError when pair `k` names a None image or, per the file's images_scene_name, an image of another scene."""
    scene = pair_file.scenes[pair_file.scene_id[k]]
    for index in (int(pair_file.im1_id[k]), int(pair_file.im2_id[k])):
        name = pair_file.images[index]
        if name is None:
            raise ValueError(f"{path}: pair {k} refers to image index {index}, which is None (no data)")
        owner = None if pair_file.scene_names_inferred else pair_file.images_scene_name[index]
        if owner is not None and owner != scene:
            raise ValueError(f"{path}: pair {k} is in scene {scene} but image {name} in {owner}")


# ----------------------------------------------------------------------------------------------------------------------
# Reading


def _optional_str(value: object) -> str | None:
    """str of an npz entry, None for None (object arrays of the published files may hold None)."""
    return None if value is None else str(value)


def _pair_columns(pairs: np.ndarray, path: Path | str) -> Columns:
    """(scene_id, im1_id, im2_id, score) of an object/numeric (P, 4) array or a structured array with those fields."""
    if pairs.dtype.names:
        missing = [f for f in PAIR_FIELDS if f not in pairs.dtype.names]
        if missing:
            raise ValueError(f"{path}: structured 'pairs' lacks fields {', '.join(missing)}")
        columns = [pairs[f] for f in PAIR_FIELDS]
    else:
        if pairs.size == 0:
            pairs = pairs.reshape(0, 4)
        if pairs.ndim != 2 or pairs.shape[1] < 4:
            raise ValueError(f"{path}: 'pairs' must be (P, 4) rows [scene, im1, im2, score], got shape {pairs.shape}")
        columns = [pairs[:, k] for k in range(4)]
    try:
        ints = [np.asarray(c, dtype=np.float64).astype(np.int64) for c in columns[:3]]
        return ints[0], ints[1], ints[2], np.asarray(columns[3], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: non-numeric entries in 'pairs' ({exc})") from exc


def scenes_from_pairs(n_images: int, scenes: list[str], scene_id: np.ndarray, im1: np.ndarray,
                      im2: np.ndarray) -> list[str | None]:
    """Scene of each image as the pairs using it say (None for images in no pair), for files without
    images_scene_name. Indices must be in range (check_pair_file)."""
    out: list[str | None] = [None] * n_images
    for s, a, b in zip(scene_id, im1, im2):
        out[a] = out[b] = scenes[s]
    return out


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an npz with the pair file's keys; FileNotFoundError / ValueError name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pair file not found")
    try:
        with np.load(path, allow_pickle=True) as data:
            content = {key: data[key] for key in data.files}
    except Exception as exc:  # np.load raises many types for a bad file
        raise ValueError(f"{path}: not a readable npz ({exc})") from exc
    missing = [key for key in REQUIRED_KEYS if key not in content]
    if missing:
        raise ValueError(f"{path}: not a pair file, missing keys {', '.join(missing)} (has {', '.join(content)})")
    return content


def load_pair_file(path: Path | str) -> PairFile:
    """Read and check a pair file (module doc); FileNotFoundError / ValueError name the file and the problem."""
    path = Path(path)
    content = _read_npz(path)
    scenes = [str(s) for s in content["scenes"]]
    images = [_optional_str(name) for name in content["images"]]
    scene_id, im1, im2, score = _pair_columns(content["pairs"], path)
    _check_indices(path, len(scenes), len(images), scene_id, im1, im2)
    inferred = "images_scene_name" not in content
    image_scenes = (scenes_from_pairs(len(images), scenes, scene_id, im1, im2) if inferred
                    else [_optional_str(s) for s in content["images_scene_name"]])
    pair_file = PairFile(scenes, images, image_scenes, scene_id, im1, im2, score, inferred)
    _check_lengths(pair_file, path)
    return pair_file


def resolve_pairs(pair_file: PairFile, path: Path | str) -> list[Pair]:
    """The pairs with scene and image names resolved; ValueError (naming `path`) for a pair naming a None image or an
    image the file puts in another scene."""
    out = []
    for k, (s, a, b, score) in enumerate(zip(pair_file.scene_id, pair_file.im1_id, pair_file.im2_id,
                                             pair_file.score)):
        _check_pair_names(pair_file, path, k)
        out.append(Pair(pair_file.scenes[s], pair_file.images[a], pair_file.images[b], float(score)))
    return out


def read_pair_file(path: Path | str) -> list[Pair]:
    """The pairs of a pair file as (scene, im1, im2, score), ids resolved to strings (both `pairs` layouts)."""
    return resolve_pairs(load_pair_file(path), path)


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def _str_array(values: Sequence[str | None]) -> np.ndarray:
    """A unicode array as the published files have, or an object array when some entry is None."""
    if any(v is None for v in values):
        return np.array(list(values), dtype=object)
    return np.array(list(values), dtype=str) if values else np.zeros(0, dtype="<U1")


def _object_rows(pair_file: PairFile) -> np.ndarray:
    """The pairs as the published object (P, 4) array of int, int, int, float."""
    rows = np.empty((len(pair_file.score), 4), dtype=object)
    for k, row in enumerate(zip(pair_file.scene_id, pair_file.im1_id, pair_file.im2_id, pair_file.score)):
        rows[k] = [int(row[0]), int(row[1]), int(row[2]), float(row[3])]
    return rows


def merge_pair_files(pair_files: Sequence[PairFile]) -> PairFile:
    """One pair file holding the scenes of several (e.g. the shards of a make_pairs run); a scene in two files is a
    ValueError. Scenes come out in id order, so merging the shards gives the file an unsharded run writes."""
    blocks = [block for pair_file in pair_files for block in pair_file.scene_blocks()]
    scenes = [block.scene for block in blocks]
    repeated = sorted({scene for scene in scenes if scenes.count(scene) > 1})
    if repeated:
        raise ValueError(f"scenes in more than one pair file: {', '.join(repeated)}")
    return PairFile.from_scene_blocks(blocks)


def save_pair_file(path: Path | str, pair_file: PairFile) -> None:
    """Check and write a pair file in the published layout (pairs as an object (P, 4) array), atomically."""
    check_pair_file(pair_file, path)
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        np.savez(f, scenes=_str_array(pair_file.scenes), images=_str_array(pair_file.images),
                 images_scene_name=_str_array(pair_file.images_scene_name), pairs=_object_rows(pair_file))
