"""Stage 5 export (aerialmd/export.py) and the dense model layout (aerialmd/dense_model.py), on the tiny sample's exact
ground truth written as a `localized_dense_metric` model."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest

from aerialmd.formats.dense_model import depth_file_name, find_dense_dir, read_dense_model
from aerialmd.formats.depth import read_depth_exr, write_depth_h5
from aerialmd.formats.pair_file import Pair, PairFile, load_pair_file, read_pair_file, save_pair_file
from aerialmd.geometry.camera import cam_from_world_from_cam2world
from aerialmd.layout import DENSE_DIR, DENSE_REPORT, FOLDER_SETTINGS, LOCALIZATION_DIR
from aerialmd.sample_scene.fixtures import SAMPLE_SFM_NAME
from aerialmd.stages.export import DEFAULT_MAX_DEPTH, write_photo
from aerialmd.stages.make_pairs import DEFAULT_REL_TOL, pair_kind
from tests.helpers import load_view, preprocess_script, reprojection_errors, shared_file

PUBLISHED_VAL = "real/aerial_megadepth_pairs/aerial_megadepth_val.npz"


def export_main(argv: list[str]) -> int:
    """The exporter's command line."""
    return preprocess_script("preprocess_aerialmegadepth").main(argv)


@pytest.fixture(scope="module")
def dense_scene(sample_dense_model, sample_truth):
    """(data root, scene id, dense model folder, ground truth by dense-model name) of the sample's exact dense model."""
    root, scene, dense = sample_dense_model
    return root, scene, dense, sample_truth


@pytest.fixture(scope="module")
def exported(dense_scene, sample_pairs_path, tmp_path_factory) -> Path:
    """The exporter's output (2 worker processes) for make_pairs' pair file."""
    root, _, _, _ = dense_scene
    out = tmp_path_factory.mktemp("export")
    assert export_main(["--megadepth_aerial_dir", str(root), "--precomputed_pairs", str(sample_pairs_path),
                        "--output_dir", str(out), "--workers", "2"]) == 0
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Dense model


def test_depth_file_name_drops_only_the_last_suffix() -> None:
    assert depth_file_name("9000_000.jpeg") == "9000_000.h5"
    assert depth_file_name("123_abc_o.jpg.jpg") == "123_abc_o.jpg.h5"


def test_dense_model_reads_back_the_ground_truth(dense_scene) -> None:
    root, scene, dense, truth = dense_scene
    assert dense == root / scene / LOCALIZATION_DIR / SAMPLE_SFM_NAME / DENSE_DIR
    model = read_dense_model(dense)
    assert sorted(model.views) == sorted(truth)
    assert {c.model.name for c in model.sparse.cameras.values()} == {"PINHOLE"}
    for name, view in model.views.items():
        assert (view.width, view.height) == (truth[name]["width"], truth[name]["height"])
        np.testing.assert_allclose(view.K, truth[name]["intrinsics"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(view.cam2world, truth[name]["cam2world"], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(model.read_depth(name), truth[name]["depth"])
    tracks = [len(p.track.elements) for p in model.sparse.points3D.values()]
    assert len(tracks) > 100 and min(tracks) >= 2


def test_sparse_observations_are_projections_in_colmap_pixels(dense_scene) -> None:
    """Each observation of a sparse point is where the point projects (COLMAP convention, pycolmap's own camera)."""
    _, _, dense, _ = dense_scene
    model = read_dense_model(dense).sparse
    for point in list(model.points3D.values())[:200]:
        for element in point.track.elements:
            image = model.image(element.image_id)
            projected = image.project_point(point.xyz)
            np.testing.assert_allclose(projected, image.points2D[element.point2D_idx].xy, atol=1e-6)


def write_text_model(folder: Path, camera: pycolmap.Camera) -> None:
    """A one-image COLMAP text model with the given camera."""
    model = pycolmap.Reconstruction()
    camera.camera_id = 1
    model.add_camera_with_trivial_rig(camera)
    model.add_image_with_trivial_frame(pycolmap.Image(name="a.jpg", camera_id=1, image_id=1),
                                       cam_from_world_from_cam2world(np.eye(4)))
    (folder / "sparse-txt").mkdir(parents=True)
    model.write_text(str(folder / "sparse-txt"))


def test_simple_pinhole_is_read_in_opencv_convention_and_distorted_models_are_refused(tmp_path) -> None:
    write_text_model(tmp_path / "simple", pycolmap.Camera(model="SIMPLE_PINHOLE", width=64, height=48,
                                                          params=[50.0, 32.0, 24.0]))
    view = read_dense_model(tmp_path / "simple").views["a.jpg"]
    np.testing.assert_allclose(view.K, [[50, 0, 31.5], [0, 50, 23.5], [0, 0, 1]])
    write_text_model(tmp_path / "radial", pycolmap.Camera(model="SIMPLE_RADIAL", width=64, height=48,
                                                          params=[50.0, 32.0, 24.0, 0.1]))
    with pytest.raises(ValueError, match="not pinhole"):
        read_dense_model(tmp_path / "radial")


def test_find_dense_dir_choices(tmp_path) -> None:
    scene = tmp_path / "0001"
    with pytest.raises(FileNotFoundError):
        find_dense_dir(scene)
    published = scene / LOCALIZATION_DIR / "sfm_superpoint+superglue" / DENSE_DIR
    published.mkdir(parents=True)
    (scene / LOCALIZATION_DIR / "sfm_sift+nn-ratio").mkdir()  # no dense model inside: not a candidate
    assert find_dense_dir(scene) == published
    ours = scene / LOCALIZATION_DIR / "sfm_aliked+lightglue" / DENSE_DIR
    ours.mkdir(parents=True)
    with pytest.raises(ValueError, match="--sfm_name"):
        find_dense_dir(scene)
    assert find_dense_dir(scene, "sfm_aliked+lightglue") == ours
    with pytest.raises(FileNotFoundError):
        find_dense_dir(scene, "sfm_sift+nn-ratio")


# ----------------------------------------------------------------------------------------------------------------------
# Export of make_pairs' output


def test_export_round_trips_for_every_pair_kind(dense_scene, sample_pairs_path, exported) -> None:
    """View 1's points (EXR + npz) projected into view 2 agree with view 2's EXR depth: median relative error < 1% on
    the overlapping pixels (those within make_pairs' agreement tolerance: the others are occluded in view 2), which
    cover at least half the share the pair's score promises; for aerial-aerial, aerial-ground and ground-ground."""
    _, scene, _, _ = dense_scene
    pairs = load_pair_file(sample_pairs_path)
    out = exported / scene
    checked = {"aerial-aerial": 0, "aerial-ground": 0, "ground-ground": 0}
    for im1, im2, score in zip(pairs.im1_id, pairs.im2_id, pairs.score):
        name1, name2 = pairs.images[im1], pairs.images[im2]
        kind = pair_kind(name1, name2, scene)
        if checked[kind] >= 8:
            continue
        view1, view2 = load_view(out, name1), load_view(out, name2)
        for source, target in ((view1, view2), (view2, view1)):
            errors = reprojection_errors(source, target)
            overlapping = errors[errors <= DEFAULT_REL_TOL]
            assert len(overlapping) >= 0.5 * score * (source[0] > 0).sum(), (kind, name1, name2, score)
            assert np.median(overlapping) < 0.01, (kind, name1, name2, np.median(overlapping))
        checked[kind] += 1
    assert min(checked.values()) >= 1, checked


def test_exported_files_equal_the_ground_truth(dense_scene, sample_pairs_path, exported) -> None:
    root, scene, dense, truth = dense_scene
    names = [n for n in load_pair_file(sample_pairs_path).images]
    assert sorted(names) == sorted(truth)
    for name in names:
        depth, K, cam2world = load_view(exported / scene, name)
        expected = np.where(truth[name]["depth"] <= DEFAULT_MAX_DEPTH, truth[name]["depth"], 0)  # the far cut
        np.testing.assert_array_equal(depth, expected)
        np.testing.assert_allclose(K, truth[name]["intrinsics"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(cam2world, truth[name]["cam2world"], rtol=0, atol=1e-9)
        assert (exported / scene / f"{name}.jpg").read_bytes() == (dense / "images" / name).read_bytes()
        image = cv2.imread(str(exported / scene / f"{name}.jpg"))
        assert image.shape[:2] == depth.shape
    assert not [p for p in (exported / scene).iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_max_depth_cut_and_resume(dense_scene, sample_pairs_path, tmp_path, capsys) -> None:
    root, scene, _, truth = dense_scene
    args = ["--megadepth_aerial_dir", str(root), "--precomputed_pairs", str(sample_pairs_path), "--output_dir",
            str(tmp_path), "--max_depth", "60", "--workers", "1"]
    assert export_main(args) == 0
    name = next(n for n in truth if truth[n]["depth"].max() > 60)
    expected = np.where(truth[name]["depth"] <= 60, truth[name]["depth"], 0)
    np.testing.assert_array_equal(read_depth_exr(tmp_path / scene / f"{name}.exr"), expected)
    capsys.readouterr()
    (tmp_path / scene / f"{name}.npz").unlink()
    assert export_main(args) == 0
    assert f"1 written, {len(truth) - 1} skipped" in capsys.readouterr().out
    assert export_main([*args, "--scenes", "1234"]) == 2  # not a scene of the pair file
    assert "error: scenes not in the scene list: 1234" in capsys.readouterr().err
    before = (tmp_path / scene / f"{name}.exr").read_bytes()
    assert export_main([*args[:-4], "--max_depth", "80", "--workers", "1"]) == 1  # other settings: refused
    assert "other settings (max_depth: 60.0 -> 80.0); use --overwrite" in capsys.readouterr().out
    assert (tmp_path / scene / f"{name}.exr").read_bytes() == before


def test_an_export_of_a_dense_model_redone_since_is_refused(dense_scene, sample_pairs_path, tmp_path, capsys) -> None:
    root, scene, dense, truth = dense_scene
    data = tmp_path / "data"
    shutil.copytree(root, data)
    report = find_dense_dir(data / scene) / DENSE_REPORT
    report.write_text('{"settings": {"max_image_size": 640}}')
    out = tmp_path / "export"
    args = ["--megadepth_aerial_dir", str(data), "--precomputed_pairs", str(sample_pairs_path), "--output_dir", str(out),
            "--workers", "1"]
    assert export_main(args) == 0
    name = next(iter(truth))
    before = (out / scene / f"{name}.exr").read_bytes()
    report.write_text('{"settings": {"max_image_size": 320}}')  # the dense stage was redone
    capsys.readouterr()
    assert export_main(args) == 1
    assert f"was made from an earlier {DENSE_REPORT}" in capsys.readouterr().out
    assert (out / scene / f"{name}.exr").read_bytes() == before
    assert export_main([*args, "--overwrite"]) == 0
    assert export_main(args) == 0 and f"0 written, {len(truth)} skipped" in capsys.readouterr().out
    report.unlink()  # as in the published data: nothing to compare
    assert export_main(args) == 0


def test_a_broken_image_is_reported_and_leaves_no_partial_outputs(dense_scene, sample_pairs_path, tmp_path, capsys) -> None:
    root, scene, dense, truth = dense_scene
    broken_root = tmp_path / "data"
    shutil.copytree(root / scene, broken_root / scene)
    broken_dense = broken_root / scene / dense.relative_to(root / scene)
    name = sorted(truth)[0]
    write_depth_h5(broken_dense / "depths" / depth_file_name(name), np.ones((7, 5), np.float32))
    out = tmp_path / "out"
    assert export_main(["--megadepth_aerial_dir", str(broken_root), "--precomputed_pairs", str(sample_pairs_path),
                        "--output_dir", str(out), "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"{scene}/{re.escape(name)}: ValueError: .*5x7", text)
    assert not list((out / scene).glob(f"{name}.*"))
    assert len(list((out / scene).glob("*.npz"))) == len(truth) - 1


# ----------------------------------------------------------------------------------------------------------------------
# Pair file formats


def published_style_file(path: Path, scene: str, names: list[str], structured: bool) -> None:
    """A pair file laid out like the published one (object rows, unicode arrays), with a None image, names without
    data in a scene that exists and a scene with no data at all. Written with numpy directly, not save_pair_file."""
    images = np.array([*names, None, "ghost_photo_o.jpg.jpg", "0015_000.jpeg", "0015_001.jpeg"], dtype=object)
    scene_names = np.array([scene] * (len(names) + 2) + ["0015"] * 2)
    n = len(names)
    rows = [(0, 0, 1, 0.25), (0, 1, n + 1, 0.1), (1, n + 2, n + 3, 0.3)]
    if structured:
        pairs = np.array(rows, dtype=[("scene_id", "i8"), ("im1_id", "i8"), ("im2_id", "i8"), ("score", "f8")])
    else:
        pairs = np.empty((len(rows), 4), dtype=object)
        for k, (s, a, b, score) in enumerate(rows):
            pairs[k] = [s, a, b, np.float64(score)]
    np.savez(path, scenes=np.array([scene, "0015"]), images=images, images_scene_name=scene_names, pairs=pairs)


@pytest.mark.parametrize("structured", [False, True])
def test_published_format_with_missing_names_is_exported_and_reported(dense_scene, tmp_path, capsys,
                                                                      structured) -> None:
    root, scene, _, truth = dense_scene
    names = sorted(truth)[:3]
    pair_path = tmp_path / "pairs.npz"
    published_style_file(pair_path, scene, names, structured)
    out = tmp_path / "out"
    code = export_main(["--megadepth_aerial_dir", str(root), "--precomputed_pairs", str(pair_path), "--output_dir",
                        str(out), "--workers", "1"])
    text = capsys.readouterr().out
    assert code == 1  # scene 0015 has no data: that scene fails, the other is exported
    assert f"{scene}/ghost_photo_o.jpg.jpg: not in the dense model" in text
    assert "0015: all 2 images" in text
    assert "1 entries of 'images' are None" in text
    assert "3 images named in the pair file have no data" in text
    assert sorted(p.name for p in (out / scene).iterdir()) == sorted([FOLDER_SETTINGS, *(
        f"{n}{s}" for n in names for s in (".exr", ".jpg", ".npz"))])
    assert not (out / "0015").exists()


def test_published_val_file_is_read_and_its_absent_scenes_reported(tmp_path, capsys) -> None:
    path = shared_file(PUBLISHED_VAL)
    pairs = load_pair_file(path)
    assert pairs.scenes == ["0015", "0022", "0147", "0148"]
    assert len(pairs.images) == len(pairs.images_scene_name) == 4525 and len(pairs.score) == 39984
    assert all(pairs.images_scene_name[i] == pairs.scenes[s] for s, i in zip(pairs.scene_id, pairs.im1_id))
    assert 0.03 <= pairs.score.min() and pairs.score.max() <= 0.6
    (tmp_path / "data").mkdir()
    code = export_main(["--megadepth_aerial_dir", str(tmp_path / "data"), "--precomputed_pairs", str(path),
                        "--output_dir", str(tmp_path / "out"), "--scenes", "0015", "0022", "--workers", "1"])
    text = capsys.readouterr().out
    assert code == 1
    assert "0015: all 1006 images" in text and "0022: all 1133 images" in text
    assert not list((tmp_path / "out").glob("*/*"))


def test_pair_file_round_trip(tmp_path) -> None:
    pair_file = PairFile.from_rows(["a", "b"], ["a_000.jpeg", None, "x.jpg.jpg"], ["a", None, "b"],
                                   [(0, 0, 0, 0.5), (1, 2, 2, 0.125)])
    save_pair_file(tmp_path / "p.npz", pair_file)
    loaded = load_pair_file(tmp_path / "p.npz")
    assert loaded.images == ["a_000.jpeg", None, "x.jpg.jpg"] and loaded.scenes == ["a", "b"]
    assert loaded.images_by_scene() == {"a": ["a_000.jpeg"], "b": ["x.jpg.jpg"]}
    np.testing.assert_array_equal(loaded.score, [0.5, 0.125])
    np.testing.assert_array_equal(loaded.im2_id, [0, 2])
    raw = np.load(tmp_path / "p.npz", allow_pickle=True)["pairs"]
    assert raw.dtype == object and isinstance(raw[0, 1], int) and isinstance(raw[0, 3], float)


def test_bad_pair_files_are_clear_errors(tmp_path) -> None:
    np.savez(tmp_path / "nokeys.npz", scenes=np.array(["a"]))
    with pytest.raises(ValueError, match="missing keys images, pairs"):
        load_pair_file(tmp_path / "nokeys.npz")
    np.savez(tmp_path / "range.npz", scenes=np.array(["a"]), images=np.array(["x"]),
             pairs=np.array([[0, 0, 3, 0.1]]))
    with pytest.raises(ValueError, match="image index out of range in pair 0: 3"):
        load_pair_file(tmp_path / "range.npz")
    with pytest.raises(ValueError, match="not a readable npz"):
        (tmp_path / "junk.npz").write_bytes(b"not an npz")
        load_pair_file(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match=r"p\.npz: scene index out of range in pair 1: 5"):
        save_pair_file(tmp_path / "p.npz", PairFile.from_rows(["a"], ["x"], ["a"], [(0, 0, 0, 0.5), (5, 0, 0, 0.5)]))
    assert not (tmp_path / "p.npz").exists()


def test_scene_names_inferred_without_images_scene_name(tmp_path) -> None:
    """Without images_scene_name each image takes the scene of its pairs; the loader's pairs are not checked against
    the inferred scenes (an image may serve two scenes, as in DUSt3R's MegaDepth metadata)."""
    np.savez(tmp_path / "p.npz", scenes=np.array(["a", "b"]), images=np.array(["x", "y", "z"]),
             pairs=np.array([[0, 0, 1, 0.5], [1, 1, 1, 0.25]]))
    loaded = load_pair_file(tmp_path / "p.npz")
    assert loaded.scene_names_inferred and loaded.images_scene_name == ["a", "b", None]
    assert read_pair_file(tmp_path / "p.npz") == [Pair("a", "x", "y", 0.5), Pair("b", "y", "y", 0.25)]


# ----------------------------------------------------------------------------------------------------------------------
# Photos


def test_write_photo_copies_plain_jpegs_and_reencodes_others(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), (5, 5), 2)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    write_photo(tmp_path / "a.png", tmp_path / "a.png.jpg", (60, 40))
    assert np.abs(cv2.imread(str(tmp_path / "a.png.jpg")).astype(int) - image).mean() < 4
    ok, jpeg = cv2.imencode(".jpg", image)
    plain = jpeg.tobytes()
    (tmp_path / "b.jpg").write_bytes(plain)
    write_photo(tmp_path / "b.jpg", tmp_path / "b.jpg.jpg", (60, 40))
    assert (tmp_path / "b.jpg.jpg").read_bytes() == plain
    exif = b"\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08"  # an APP1 EXIF segment after SOI
    (tmp_path / "c.jpg").write_bytes(plain[:2] + exif + plain[2:])
    write_photo(tmp_path / "c.jpg", tmp_path / "c.jpg.jpg", (60, 40))
    assert b"Exif\x00\x00" not in (tmp_path / "c.jpg.jpg").read_bytes()
    with pytest.raises(ValueError, match="60x40"):
        write_photo(tmp_path / "b.jpg", tmp_path / "d.jpg", (40, 60))
    shutil.copyfile(tmp_path / "a.png", tmp_path / "png_named.jpg")  # a PNG under a .jpg name: decoded, re-encoded
    write_photo(tmp_path / "png_named.jpg", tmp_path / "e.jpg", (60, 40))
    assert (tmp_path / "e.jpg").read_bytes()[:2] == b"\xff\xd8"
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        write_photo(tmp_path / "broken.jpg", tmp_path / "f.jpg", (60, 40))
    with pytest.raises(FileNotFoundError):
        write_photo(tmp_path / "absent.jpg", tmp_path / "g.jpg", (60, 40))
    assert not (tmp_path / "f.jpg").exists() and not (tmp_path / "g.jpg").exists()

