"""Photos confirmed through registered neighbours (aerialmd/sfm/photo_neighbours.py), on real files: a textured wall
rendered into photos with known poses, their depth maps as EXR, SIFT features in features.h5."""

from __future__ import annotations

import numpy as np

from aerialmd.sfm.features import FeatureConf, ImageInput, extract_features
from aerialmd.sfm.photo_neighbours import confirm_through_neighbours, photo_overlaps
from aerialmd.sfm.registration import (
    STATUS_REGISTERED,
    STATUS_REJECTED,
    Correspondences,
    PhotoResult,
    RegistrationConf,
    keep_predicted_pose,
)
from tests.helpers import pose, render_photo, rotated, shifted, wall_texture


def test_a_photo_is_registered_through_its_registered_neighbours_only_on_its_true_pose(tmp_path):
    """Photo 0 is registered (by the aerial frames). Photo 1 has its true MegaDepth pose and sees the wall photo 0
    sees: registered, by neighbours. Photos 2 and 3 see the same wall but their MegaDepth poses are wrong by 1.5 deg
    and by 0.5 m sideways at 10 m (3 deg of parallax): rejected, with the reason. Photo 4 looks away from the wall:
    rejected, nothing overlaps it. Photo 5 sees only the part of the wall photo 1 sees and photo 0 does not at a
    footprint it can match: registered in the second round, through photo 1."""
    texture = wall_texture(7)
    views = [pose(0, [0, 0, 0]), pose(8, [-1.5, 0.3, 5.0]), pose(-6, [1.0, -0.2, 0.0]), pose(4, [0.5, 0.5, 0.4]),
             pose(180, [0, 0, 0]), pose(-10, [-2.0, 0.0, 8.0])]
    sfm_poses = [views[0], views[1], rotated(views[2], 1.5), shifted(views[3], [0.5, 0, 0]), views[4], views[5]]
    photos = [render_photo(tmp_path, f"photo{k}", texture, view, sfm) for k, (view, sfm)
              in enumerate(zip(views, sfm_poses))]
    features = tmp_path / "features.h5"
    extract_features([ImageInput(p.name, p.path) for p in photos], features, FeatureConf())
    overlaps = photo_overlaps(photos, list(range(len(photos))))
    assert overlaps[5, 0] < 0.1 <= overlaps[5, 1], "photo 5 must need photo 1 (the scene's geometry changed)"
    assert overlaps[4].max() == 0.0 and overlaps[1, 0] > 0.5

    results = [PhotoResult(p.name, STATUS_REJECTED, reason="aerial matches") for p in photos]
    results[0].status = STATUS_REGISTERED
    none = Correspondences(*(np.zeros(shape) for shape in (0, (0, 2), (0, 3), 0)))

    def keep(index: int) -> None:
        keep_predicted_pose(results[index], photos[index].camera, photos[index].cam2world_sfm, none, RegistrationConf())

    confirm_through_neighbours(photos, results, features, keep, RegistrationConf())
    assert [r.status for r in results] == ["registered", "registered", "rejected", "rejected", "rejected",
                                           "registered"]
    assert [r.confirmed_by for r in results] == [None, "neighbours", None, None, None, "neighbours"]
    assert results[1].neighbour_support >= 50 and results[1].neighbour_support >= 0.5 * results[1].neighbour_matches
    for wrong in results[2:4]:
        assert wrong.cam_from_world is None and wrong.neighbour_support < 0.05 * wrong.neighbour_matches
        assert wrong.reason.startswith("aerial matches; ") and "matched to registered photos confirm it" in wrong.reason
    assert "no registered photo overlaps it" in results[4].reason
