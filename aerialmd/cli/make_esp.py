"""Write a Google Earth Studio project (.esp) with orbits around a point, ready to render in GES.

    python make_esp.py --lat 48.85826 --lon 2.29450 --alt 200 --output eiffel.esp
    python make_esp.py --from_megadepth 0001 --geolocations geolocations.csv      # writes 0001.esp

Each orbit is a circle (or an arc) at a height above the look-at point and a horizontal radius (or a tilt), with one
keyframe per frame; every camera looks at the point. The point is also the project's first track point, so the
3D-tracking export of the render has it as origin. Import the file into GES as an Earth Studio project, render the
video and the 3D camera tracking JSON (Global), then run stage 2 (datasets_preprocess/preprocess_ge.py).
See aerialmd/formats/esp.py for the format.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aerialmd.formats.esp import (
    DEFAULT_FOV_DEG,
    DEFAULT_FRAMES_PER_ORBIT,
    DEFAULT_HEIGHTS_M,
    DEFAULT_RADII_M,
    EspProjectSpec,
    OrbitSpec,
    normalize_scene_id,
    scene_geolocation,
    write_esp,
)
from aerialmd.geometry.geodesy import SpherePoint

MIN_GES_ALTITUDE_M = 1.0


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_argument_group("look-at point (either --lat/--lon or --from_megadepth/--geolocations)")
    where.add_argument("--lat", type=float, help="latitude of the look-at point, degrees")
    where.add_argument("--lon", type=float, help="longitude of the look-at point, degrees")
    where.add_argument("--alt", type=float, default=None,
                       help="altitude of the look-at point in GES metres (about: ground elevation above sea level plus "
                            "half the landmark's height); overrides the geolocation file's; default 1 (GES's lowest)")
    where.add_argument("--from_megadepth", metavar="SCENE_ID", help="take the point of this MegaDepth scene")
    where.add_argument("--geolocations", type=Path, metavar="FILE",
                       help="CSV (scene_id,lat,lon[,alt]) or JSON ({\"0001\": {\"lat\":..,\"lon\":..,\"alt\":..}}) file")
    orbits = parser.add_argument_group("orbits (one per height)")
    orbits.add_argument("--heights", type=float, nargs="+", default=list(DEFAULT_HEIGHTS_M),
                        help="camera heights above the look-at point, metres (default: %(default)s)")
    shape = orbits.add_mutually_exclusive_group()
    shape.add_argument("--radii", type=float, nargs="+", default=None,
                       help=f"horizontal distances from the point, one per height (default: {list(DEFAULT_RADII_M)})")
    shape.add_argument("--tilts", type=float, nargs="+", default=None,
                       help="view tilts from the nadir in degrees, one per height (instead of --radii)")
    orbits.add_argument("--frames_per_orbit", type=int, default=DEFAULT_FRAMES_PER_ORBIT, help="default: %(default)s")
    orbits.add_argument("--arc_deg", type=float, default=360.0, help="part of the circle each orbit covers")
    orbits.add_argument("--start_bearing_deg", type=float, default=0.0,
                        help="compass bearing of the first camera seen from the point (0 = north of it)")
    project = parser.add_argument_group("project")
    project.add_argument("--output", type=Path, default=None, help="the .esp to write (default: <name>.esp)")
    project.add_argument("--name", default=None, help="project name, which names the rendered frames "
                                                      "(default: the scene id, else 'orbit')")
    project.add_argument("--fov", type=float, default=DEFAULT_FOV_DEG, help="field of view, degrees")
    project.add_argument("--width", type=int, default=1920)
    project.add_argument("--height", type=int, default=1080)
    project.add_argument("--frame_rate", type=float, default=30.0)
    project.add_argument("--logarithmic", action="store_true", help="logarithmic altitude (for moves from space)")
    return parser


def resolve_target(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SpherePoint:
    """The look-at point from --lat/--lon or from the scene's geolocation; --alt wins over the file's altitude."""
    if args.from_megadepth is not None:
        if args.lat is not None or args.lon is not None:
            parser.error("give either --lat/--lon or --from_megadepth, not both")
        if args.geolocations is None:
            parser.error("--from_megadepth needs --geolocations FILE (scene id -> lat, lon[, alt])")
        location = scene_geolocation(args.from_megadepth, args.geolocations)
        lat, lon, alt = location.latitude, location.longitude, location.altitude
    elif args.lat is None or args.lon is None:
        parser.error("give --lat and --lon, or --from_megadepth SCENE_ID --geolocations FILE")
    else:
        lat, lon, alt = args.lat, args.lon, None
    if args.alt is not None:
        alt = args.alt
    if alt is None:
        print(f"note: no altitude given; the look-at point is at {MIN_GES_ALTITUDE_M:g} m (give --alt: ground "
              "elevation plus about half the landmark's height)", file=sys.stderr)
        alt = MIN_GES_ALTITUDE_M
    return SpherePoint(lat, lon, alt)


def orbit_specs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[OrbitSpec, ...]:
    """One orbit per height, with its radius or tilt."""
    heights = args.heights
    if args.tilts is not None:
        if len(args.tilts) != len(heights):
            parser.error(f"--tilts has {len(args.tilts)} values for {len(heights)} heights")
        return tuple(OrbitSpec.from_tilt(h, t, args.frames_per_orbit, arc_deg=args.arc_deg,
                                         start_bearing_deg=args.start_bearing_deg) for h, t in zip(heights, args.tilts))
    radii = args.radii if args.radii is not None else list(DEFAULT_RADII_M)
    if len(radii) != len(heights):
        parser.error(f"--radii has {len(radii)} values for {len(heights)} heights")
    return tuple(OrbitSpec(h, r, args.frames_per_orbit, args.arc_deg, args.start_bearing_deg)
                 for h, r in zip(heights, radii))


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        target = resolve_target(args, parser)
        name = args.name or (normalize_scene_id(args.from_megadepth) if args.from_megadepth else "orbit")
        spec = EspProjectSpec(name=name, target=target, orbits=orbit_specs(args, parser), width=args.width,
                              height=args.height, frame_rate=args.frame_rate, fov_deg=args.fov,
                              logarithmic=args.logarithmic)
        output = write_esp(args.output or Path(f"{name}.esp"), spec)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {output}: {spec.num_frames} frames in {len(spec.orbits)} orbits around "
          f"lat {target.latitude:.6f}, lon {target.longitude:.6f}, alt {target.altitude:g} m")
    return 0


if __name__ == "__main__":
    sys.exit(main())
