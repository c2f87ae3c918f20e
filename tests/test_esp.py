"""Google Earth Studio projects (.esp): generated orbits checked against independent spherical geometry, and the real
projects in ../shared decoded into plausible cameras (and, for GESblender, into exactly its tracking export)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import make_esp
from aerialmd.formats.esp import (
    EspError,
    EspProjectSpec,
    OrbitSpec,
    decode_altitude,
    encode_altitude,
    esp_text,
    normalize_scene_id,
    read_esp,
    read_geolocations,
    write_esp,
)
from aerialmd.formats.ges_json import ecef_from_camera_rotation, read_ges_json
from aerialmd.geometry.geodesy import SpherePoint
from tests.helpers import GESBLENDER_ORIGIN, shared_file

SPHERE_RADIUS_M = 6_371_010.0  # ../shared/README.md


# -- independent spherical geometry (deliberately not the package's) -------------------------------------------------

def ecef(lat: float, lon: float, alt: float) -> np.ndarray:
    la, lo = math.radians(lat), math.radians(lon)
    return (SPHERE_RADIUS_M + alt) * np.array([math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)])


def central_angle(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine central angle (radians)."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * math.asin(math.sqrt(h))


def ground_distance_m(a: SpherePoint, lat: float, lon: float) -> float:
    return central_angle(a.latitude, a.longitude, lat, lon) * SPHERE_RADIUS_M


def initial_bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    c = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def local_up(p: SpherePoint) -> np.ndarray:
    return ecef(p.latitude, p.longitude, 0.0) / SPHERE_RADIUS_M


def same_point(a: SpherePoint, b: SpherePoint) -> bool:
    """Equal within the .esp encoding's precision (1e-9 degree is 0.1 mm)."""
    return (abs(a.latitude - b.latitude) < 1e-9 and abs(a.longitude - b.longitude) < 1e-9
            and abs(a.altitude - b.altitude) < 1e-6)


def looked_at_point(project) -> SpherePoint:
    camera = project.cameras[0]
    return camera.target if camera.target is not None else camera.position


# -- generated projects -----------------------------------------------------------------------------------------------

TARGET = SpherePoint(40.68925, -74.04450, 46.0)
ORBITS = (OrbitSpec(60.0, 200.0, 12), OrbitSpec(150.0, 320.0, 8, arc_deg=90.0, start_bearing_deg=45.0))


def expected_bearings() -> list[float]:
    return [30.0 * i for i in range(12)] + [45.0 + 90.0 * i / 7 for i in range(8)]


@pytest.fixture()
def written(tmp_path):
    spec = EspProjectSpec(name="liberty", target=TARGET, orbits=ORBITS)
    return spec, read_esp(write_esp(tmp_path / "liberty.esp", spec))


def test_generated_cameras_lie_on_the_requested_orbits(written):
    spec, project = written
    assert [c.frame for c in project.cameras] == list(range(20))
    assert project.render_range == (0, 19) and project.duration_frames == 19  # 20 rendered frames, inclusive
    heights = [60.0] * 12 + [150.0] * 8
    radii = [200.0] * 12 + [320.0] * 8
    for camera, height, radius, bearing in zip(project.cameras, heights, radii, expected_bearings()):
        p = camera.position
        arc = central_angle(TARGET.latitude, TARGET.longitude, p.latitude, p.longitude) * (SPHERE_RADIUS_M + TARGET.altitude)
        assert arc == pytest.approx(radius, abs=1e-3)
        assert p.altitude == pytest.approx(TARGET.altitude + height, abs=1e-6)
        got = initial_bearing_deg(TARGET.latitude, TARGET.longitude, p.latitude, p.longitude)
        assert (got - bearing + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=1e-6)


def test_generated_cameras_look_at_the_target_with_a_level_horizon(written):
    _, project = written
    target = ecef(TARGET.latitude, TARGET.longitude, TARGET.altitude)
    for camera in project.cameras:
        p = camera.position
        to_target = target - ecef(p.latitude, p.longitude, p.altitude)
        assert same_point(camera.target, TARGET) and camera.target_influence == 1.0
        # the stored heading/tilt alone (what GES uses without the target) already point at the target
        by_rotation = camera.rotation_view()
        assert angle_deg(by_rotation[:, 2], to_target) < 1e-3
        assert angle_deg(camera.ecef_from_camera()[:, 2], to_target) < 1e-3
        up = local_up(p)
        assert abs(float(by_rotation[:, 0] @ up)) < 1e-9  # x (right) horizontal: no roll
        assert float(by_rotation[:, 1] @ up) < 0  # y (down) points down: upright image
        assert float(by_rotation[:, 2] @ up) < 0  # looking down, not at the sky
    assert project.cameras[0].fov_deg == pytest.approx(40.0)
    assert len(project.track_points) == 1 and project.track_points[0][0] == "target"
    assert same_point(project.track_points[0][1], TARGET)


def test_tilt_orbit_sees_the_target_at_that_tilt():
    orbit = OrbitSpec.from_tilt(120.0, 60.0, 4)
    assert orbit.radius_m == pytest.approx(120.0 * math.tan(math.radians(60.0)))
    spec = EspProjectSpec(name="tilt", target=TARGET, orbits=(orbit,))
    project = read_esp_text(esp_text(spec))
    for camera in project.cameras:
        down = -local_up(camera.position)
        # flat-ground definition; the sphere's curvature over 200 m changes it by < 0.01 degree
        assert angle_deg(camera.rotation_view()[:, 2], down) == pytest.approx(60.0, abs=0.01)
        assert camera.tilt_deg == pytest.approx(60.0, abs=0.01)


def read_esp_text(text: str):
    from aerialmd.formats.esp import parse_esp

    return parse_esp(json.loads(text), "<test>")


@pytest.mark.parametrize("logarithmic", [False, True])
def test_altitude_codec_round_trips_and_rejects_out_of_range(logarithmic):
    for altitude in (1.0, 2.5, 100.0, 5000.0, 3.2e6, 65117481.0):
        relative = encode_altitude(altitude, logarithmic)
        assert 0.0 <= relative <= 1.0
        assert decode_altitude(relative, logarithmic) == pytest.approx(altitude, rel=1e-9, abs=1e-6)
    linear = (250.0 - 1.0) / (65117481.0 - 1.0)
    assert encode_altitude(250.0, logarithmic) == pytest.approx(linear ** (1 / 15) if logarithmic else linear)
    for bad in (0.5, -10.0, 7e7, float("nan")):
        with pytest.raises(EspError, match="altitude"):
            encode_altitude(bad, logarithmic)


def test_logarithmic_project_decodes_to_the_same_cameras():
    linear = EspProjectSpec(name="a", target=TARGET, orbits=ORBITS)
    logarithmic = EspProjectSpec(name="a", target=TARGET, orbits=ORBITS, logarithmic=True)
    data = json.loads(esp_text(logarithmic))
    assert data["scenes"][0]["animationModel"]["logarithmic"] is True
    first_altitude = data["scenes"][0]["attributes"][0]["attributes"][0]["attributes"][0]["attributes"][2]
    assert first_altitude["keyframes"][0]["value"] > 0.3  # 15th root: far from the linear 1.6e-6
    for a, b in zip(read_esp_text(esp_text(linear)).cameras, read_esp_text(esp_text(logarithmic)).cameras):
        assert b.position.altitude == pytest.approx(a.position.altitude, abs=1e-6)
        assert b.target.altitude == pytest.approx(TARGET.altitude, abs=1e-6)


def test_same_arguments_give_byte_identical_files(tmp_path, capsys):
    args = ["--lat", "51.50073", "--lon", "-0.12463", "--alt", "20", "--frames_per_orbit", "10"]
    assert make_esp.main(args + ["--output", str(tmp_path / "a.esp")]) == 0
    assert make_esp.main(args + ["--output", str(tmp_path / "b.esp")]) == 0
    assert (tmp_path / "a.esp").read_bytes() == (tmp_path / "b.esp").read_bytes()
    assert make_esp.main(args[:-1] + ["11", "--output", str(tmp_path / "c.esp")]) == 0
    assert (tmp_path / "c.esp").read_bytes() != (tmp_path / "a.esp").read_bytes()
    project = read_esp(tmp_path / "a.esp")
    assert len(project.cameras) == 40 and project.name == "orbit"
    assert "wrote" in capsys.readouterr().out


def test_cli_takes_the_point_from_a_megadepth_geolocation_csv(tmp_path):
    table = tmp_path / "geo.csv"
    table.write_text("# MegaDepth scene geolocations\nscene_id,lat,lon,alt\n1,41.89021,12.49223,48\n0015,48.8530,2.3499,\n")
    out = tmp_path / "rome.esp"
    assert make_esp.main(["--from_megadepth", "0001", "--geolocations", str(table), "--output", str(out),
                          "--heights", "80", "--radii", "150", "--frames_per_orbit", "6"]) == 0
    project = read_esp(out)
    assert project.name == "0001" and len(project.cameras) == 6
    assert same_point(project.cameras[0].target, SpherePoint(41.89021, 12.49223, 48.0))
    for camera in project.cameras:
        assert ground_distance_m(camera.position, 41.89021, 12.49223) == pytest.approx(150.0, abs=0.05)
        assert camera.position.altitude == pytest.approx(128.0)
    # no altitude in the file: --alt supplies it
    assert make_esp.main(["--from_megadepth", "15", "--geolocations", str(table), "--alt", "35",
                          "--output", str(tmp_path / "nd.esp")]) == 0
    assert read_esp(tmp_path / "nd.esp").cameras[0].target.altitude == pytest.approx(35.0)


def test_geolocations_json_forms_and_scene_ids(tmp_path):
    path = tmp_path / "geo.json"
    path.write_text(json.dumps({"1": [41.89021, 12.49223, 48], "0015": {"latitude": 48.853, "longitude": 2.3499}}))
    locations = read_geolocations(path)
    assert set(locations) == {"0001", "0015"}
    assert locations["0001"].altitude == 48 and locations["0015"].altitude is None
    assert normalize_scene_id(" 7 ") == "0007" and normalize_scene_id("abc") == "abc"


@pytest.mark.parametrize("content, problem", [
    ("scene,latitude\n0001,41.9\n", "lacks column"),
    ("scene_id,lat,lon\n0001,141.9,12.5\n", "out of range"),
    ("scene_id,lat,lon\n0001,north,12.5\n", "must be numbers"),
    ("scene_id,lat,lon\n0001,41.9,12.5\n1,41.9,12.5\n", "listed twice"),
    ("scene_id,lat,lon\n0002,41.9,12.5\n", "scene 0001 not listed"),
])
def test_bad_geolocation_files_fail_with_one_line_naming_the_file(tmp_path, capsys, content, problem):
    table = tmp_path / "geo.csv"
    table.write_text(content)
    code = make_esp.main(["--from_megadepth", "0001", "--geolocations", str(table), "--output", str(tmp_path / "x.esp")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: ") and str(table) in err and problem in err and "\n" not in err
    assert not (tmp_path / "x.esp").exists()


def test_bad_command_lines_exit_non_zero(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        make_esp.main(["--lat", "10"])
    assert exc.value.code != 0
    with pytest.raises(SystemExit) as exc:
        make_esp.main(["--lat", "10", "--lon", "20", "--heights", "50", "100", "--radii", "80"])
    assert exc.value.code != 0
    assert make_esp.main(["--lat", "10", "--lon", "20", "--heights", "50", "--radii", "0",
                          "--output", str(tmp_path / "x.esp")]) == 1
    assert "radius" in capsys.readouterr().err


def test_unreadable_projects_name_the_file(tmp_path):
    bad = tmp_path / "bad.esp"
    bad.write_text("{not json")
    with pytest.raises(EspError, match="bad.esp: malformed JSON"):
        read_esp(bad)
    bad.write_text(json.dumps({"settings": {"duration": 1, "dimensions": {"width": 1, "height": 1}},
                               "scenes": [{"attributes": []}]}))
    with pytest.raises(EspError, match="bad.esp: no 'cameraGroup'"):
        read_esp(bad)


# -- real projects (../shared) ----------------------------------------------------------------------------------------

REAL_PROJECTS = ["esp/2020-06-25-00-34-us-ca-mtv-sb-10_last.esp", "esp/berlin1_theater.esp", "esp/bungeenerf_begin3.esp",
                 "esp/ges_traj.esp", "esp/lard_template.esp.json", "esp/memorial_church_1.esp", "esp/san_jose.esp",
                 "esp/transamerica.esp.json", "ges_gesblender_local/GESblender.esp",
                 "ges_zoom_render_no_json/zoomin2020.esp"]


def type_paths(node: dict, prefix: str = "") -> set[str]:
    paths = set()
    for child in node.get("attributes", []):
        path = f"{prefix}/{child['type']}"
        paths |= {path} | type_paths(child, path)
    return paths


def value_ranges(node: dict) -> dict[str, tuple[float, float]]:
    """(min, max) of every attribute type below `node` that states one."""
    out = {}
    for child in node.get("attributes", []):
        value = child.get("value", {})
        if "minValueRange" in value:
            out[child["type"]] = (value["minValueRange"], value["maxValueRange"])
        out.update(value_ranges(child))
    return out


def test_generated_layout_is_the_one_ges_saves():
    reference = json.loads(shared_file("real/ges_gesblender_local/GESblender.esp").read_text())
    quickstart = json.loads(shared_file("real/esp/memorial_church_1.esp").read_text())
    generated = json.loads(esp_text(EspProjectSpec(name="x", target=TARGET, orbits=ORBITS)))
    assert generated.keys() == reference.keys()
    assert generated["scenes"][0].keys() == reference["scenes"][0].keys()
    known = type_paths(reference["scenes"][0]) | type_paths(quickstart["scenes"][0])
    assert type_paths(generated["scenes"][0]) <= known
    assert generated["scenes"][0]["cameraExport"]["trackPoints"][0].keys() == \
        reference["scenes"][0]["cameraExport"]["trackPoints"][0].keys()
    # every value range written is the one GES itself writes for that attribute
    template = json.loads(shared_file("real/esp/lard_template.esp.json").read_text())  # the only one with a fov range
    ges_ranges = {**value_ranges(template["scenes"][0]), **value_ranges(reference["scenes"][0])}
    written_ranges = value_ranges(generated["scenes"][0])
    assert {"longitude", "latitude", "altitude", "rotationX", "rotationY", "altitudePOI", "fov"} <= written_ranges.keys()
    for kind, value_range in written_ranges.items():
        assert value_range == ges_ranges[kind], kind


@pytest.mark.parametrize("relative", REAL_PROJECTS)
def test_real_projects_decode_to_plausible_cameras(relative):
    project = read_esp(shared_file(f"real/{relative}"))
    assert project.cameras
    for camera in project.cameras:
        p = camera.position
        assert -90 < p.latitude < 90 and -180 <= p.longitude <= 180
        assert 1.0 <= p.altitude <= 65117481.0
        view = camera.ecef_from_camera()
        assert float(view[:, 2] @ local_up(p)) < 0  # below the horizon: never at the sky
        assert abs(float(view[:, 0] @ local_up(p))) < 1e-6  # level horizon (no roll anywhere)
        assert 0.0 <= camera.tilt_deg < 90.0 and 0.0 <= camera.heading_deg <= 360.0
        if camera.target is not None:
            assert camera.target.altitude < p.altitude  # the look-at point is below the camera


# The place each project was made for (general knowledge, or ../shared/README.md for GESblender), metres allowed.
LANDMARKS = {
    "esp/memorial_church_1.esp": (37.42694, -122.17028, 300.0),  # Stanford Memorial Church
    "esp/transamerica.esp.json": (37.79528, -122.40278, 300.0),  # Transamerica Pyramid
    "esp/berlin1_theater.esp": (52.50960, 13.37590, 1000.0),  # Potsdamer Platz (the theatre is next to it)
    "esp/san_jose.esp": (37.33820, -121.88630, 3000.0),  # downtown San Jose
    "esp/bungeenerf_begin3.esp": (55.61310, 12.97580, 300.0),  # Turning Torso, Malmo
    "esp/lard_template.esp.json": (43.62930, 1.36380, 15000.0),  # Toulouse-Blagnac airport (a landing approach)
    "ges_gesblender_local/GESblender.esp": (GESBLENDER_ORIGIN.latitude, GESBLENDER_ORIGIN.longitude, 500.0),
    "ges_zoom_render_no_json/zoomin2020.esp": (35.68120, 139.76710, 60000.0),  # Tokyo area
}


@pytest.mark.parametrize("relative", sorted(LANDMARKS))
def test_real_projects_look_at_the_place_they_were_made_for(relative):
    lat, lon, tolerance = LANDMARKS[relative]
    project = read_esp(shared_file(f"real/{relative}"))
    assert ground_distance_m(looked_at_point(project), lat, lon) < tolerance


def test_quickstart_orbits_circle_their_target():
    project = read_esp(shared_file("real/esp/bungeenerf_begin3.esp"))
    assert len(project.cameras) == 35 and project.cameras[-1].frame == project.duration_frames == 3195
    target = project.cameras[0].target
    distances = [ground_distance_m(c.position, target.latitude, target.longitude) for c in project.cameras]
    assert all(150.0 < d < 3500.0 for d in distances)  # orbits, not a fly-by
    for orbit in range(7):  # five keyframes per orbit, the last back at the first bearing
        ring = project.cameras[5 * orbit:5 * orbit + 5]
        bearings = [initial_bearing_deg(target.latitude, target.longitude, c.position.latitude, c.position.longitude)
                    for c in ring]
        assert len({round(b / 90.0) % 4 for b in bearings[:4]}) == 4  # the four quarters of a circle
        assert len({round(c.position.altitude, 3) for c in ring}) <= 2


def test_gesblender_project_decodes_to_its_tracking_export():
    project = read_esp(shared_file("real/ges_gesblender_local/GESblender.esp"))
    export = read_ges_json(shared_file("real/ges_gesblender_local/GESblender.json"))
    name, origin = project.track_points[0]
    assert origin.latitude == pytest.approx(GESBLENDER_ORIGIN.latitude, abs=1e-7)
    assert origin.longitude == pytest.approx(GESBLENDER_ORIGIN.longitude, abs=1e-7)
    assert origin.altitude == pytest.approx(GESBLENDER_ORIGIN.altitude, abs=1e-3)
    assert project.render_range == (0, export.num_frames)
    assert [c.frame for c in project.cameras] == [0, 60]
    origin_ecef = ecef(origin.latitude, origin.longitude, origin.altitude)
    for camera in project.cameras:
        frame = export.frames[camera.frame]  # Local export: offsets from the origin, ECEF axes
        p = camera.position
        assert np.linalg.norm(ecef(p.latitude, p.longitude, p.altitude) - (origin_ecef + frame.position)) < 1e-3
        exported = ecef_from_camera_rotation(frame.rotation_deg)
        relative_rotation = exported.T @ camera.ecef_from_camera()
        assert math.degrees(math.acos(min(1.0, (np.trace(relative_rotation) - 1) / 2))) < 1e-4
        assert angle_deg(ecef_from_camera_rotation(camera.ges_rotation_deg())[:, 2], exported[:, 2]) < 1e-4
    with shared_file("real/ges_gesblender_local/manual_tracking.csv").open(encoding="utf-8-sig") as f:
        rows = {int(r["frame"]): r for r in csv.DictReader(f)}
    for camera in project.cameras:
        row = rows[camera.frame]
        assert camera.position.longitude == pytest.approx(float(row["lon"]), abs=1e-7)
        assert camera.position.latitude == pytest.approx(float(row["lat"]), abs=1e-7)
        assert camera.position.altitude == pytest.approx(float(row["alt"]), abs=0.01)


def test_logarithmic_altitude_and_heading_tilt_on_a_real_zoom():
    """zoomin2020.esp (logarithmic) stores at its last keyframe a heading/tilt and a target set in the GES editor:
    only the right altitude decoding makes the two agree."""
    project = read_esp(shared_file("real/ges_zoom_render_no_json/zoomin2020.esp"))
    assert project.logarithmic
    first, last = project.cameras[0], project.cameras[-1]
    assert first.position.altitude == pytest.approx(65117481.0) and first.target_influence == 0.0
    assert float(first.ecef_from_camera()[:, 2] @ local_up(first.position)) == pytest.approx(-1.0)  # nadir from space
    assert 100.0 < last.position.altitude < 1000.0  # the render's last frame is an oblique view of a campus
    assert last.target_influence == 1.0
    p, t = last.position, last.target
    to_target = ecef(t.latitude, t.longitude, t.altitude) - ecef(p.latitude, p.longitude, p.altitude)
    assert angle_deg(last.rotation_view()[:, 2], to_target) < 1e-3
