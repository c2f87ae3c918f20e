"""The 3D view of a scene's registration: one self-contained HTML page (no network, no library: a canvas and a page
of JavaScript) showing the aerial and ground cameras as frusta, the sparse points, and a cloud fused from the depth
maps (every image's depth subsampled on a grid, lifted with its intrinsics and pose), coloured by image kind: aerial
orange, ground blue, sparse points grey. Drag to turn, shift-drag to move, wheel to zoom. The report stage writes it
beside its figures (`view-<sfm>.html`) and index.html links it.

The page holds the geometry as JSON in ENU metres relative to the sparse points' median (centimetres kept), at most
MAX_FUSED_POINTS fused and MAX_SPARSE_POINTS sparse points: a few MB for any scene.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycolmap

from aerialmd.atomic import write_text_atomic
from aerialmd.formats.dense_model import DenseModel, read_dense_model
from aerialmd.layout import DENSE_DIR, LOCALIZED_MODEL, is_aerial

COLOURS = {"aerial": "#ff8c00", "ground": "#1e78ff", "sparse": "#969696"}
MAX_FUSED_POINTS = 60000
MAX_SPARSE_POINTS = 20000
FRUSTUM_SIZE = 0.03  # frustum depth, of the scene's extent


def scene_frame(model: pycolmap.Reconstruction, points: np.ndarray) -> tuple[np.ndarray, float]:
    """The view's origin (median of the sparse points (N, 3), else of the cameras) and the scene's extent (metres)."""
    if not len(points):
        points = np.array([image.projection_center() for image in model.images.values()]).reshape(-1, 3)
    low, high = np.percentile(points, [5, 95], axis=0)
    return np.median(points, axis=0), float(max(np.linalg.norm(high - low), 1.0))


def frustum_segments(model: pycolmap.Reconstruction, image: pycolmap.Image, depth: float) -> np.ndarray:
    """The 8 segments (8, 2, 3) of an image's frustum: centre to the four image corners at z-depth `depth`, and the
    corners' rectangle."""
    camera = model.cameras[image.camera_id]
    corners_px = np.array([[0, 0], [camera.width, 0], [camera.width, camera.height], [0, camera.height]], float)
    rays = np.column_stack([camera.cam_from_img(corners_px), np.ones(4)])
    corners = image.cam_from_world().inverse() * (rays * depth)
    centre = np.asarray(image.projection_center())
    return np.array([(centre, c) for c in corners] + [(corners[k], corners[(k + 1) % 4]) for k in range(4)])


def fused_points(dense: DenseModel, scene: str, budget: int) -> dict[str, np.ndarray]:
    """World points of every image's valid depths on a grid, per kind, `budget` in all (spread evenly over the
    images)."""
    out: dict[str, list[np.ndarray]] = {"aerial": [], "ground": []}
    per_image = max(1, budget // max(len(dense.views), 1))
    for name, view in dense.views.items():
        depth = dense.read_depth(name)
        stride = max(1, int(np.sqrt(view.width * view.height / per_image)))
        v, u = np.mgrid[0:view.height:stride, 0:view.width:stride].reshape(2, -1)
        z = depth[v, u]
        keep = z > 0
        rays = np.column_stack([u[keep], v[keep], np.ones(keep.sum())]) @ np.linalg.inv(view.K).T
        out["aerial" if is_aerial(name, scene) else "ground"].append(
            (rays * z[keep, None]) @ view.cam2world[:3, :3].T + view.cam2world[:3, 3])
    return {kind: np.vstack(parts) if parts else np.zeros((0, 3)) for kind, parts in out.items()}


def rounded(points: np.ndarray, origin: np.ndarray) -> list[float]:
    """Flat list of coordinates relative to `origin`, in metres to the centimetre."""
    return np.round(np.asarray(points, float).reshape(-1, 3) - origin, 2).ravel().tolist()


def view_data(sfm_dir: Path, scene: str) -> dict:
    """Everything the page draws, by layer: point coordinates and segment end points (flat lists) and a colour."""
    model = pycolmap.Reconstruction(str(sfm_dir / LOCALIZED_MODEL))
    sparse = np.array([p.xyz for p in model.points3D.values()]).reshape(-1, 3)
    origin, extent = scene_frame(model, sparse)
    layers = [{"name": "sparse points", "colour": COLOURS["sparse"], "size": 1,
               "points": rounded(sparse[:: max(1, len(sparse) // MAX_SPARSE_POINTS)], origin)}]
    if (sfm_dir / DENSE_DIR).is_dir():
        for kind, points in fused_points(read_dense_model(sfm_dir / DENSE_DIR), scene, MAX_FUSED_POINTS).items():
            layers.append({"name": f"{kind} depth", "colour": COLOURS[kind], "size": 2, "points": rounded(points, origin)})
    for kind in ("aerial", "ground"):
        images = [i for i in model.images.values() if i.has_pose and is_aerial(i.name, scene) == (kind == "aerial")]
        segments = [frustum_segments(model, image, FRUSTUM_SIZE * extent) for image in images]
        layers.append({"name": f"{kind} cameras ({len(images)})", "colour": COLOURS[kind], "size": 2,
                       "segments": rounded(np.array(segments), origin) if segments else []})
    return {"scene": scene, "extent": extent, "layers": layers}


def write_scene_view(sfm_dir: Path, scene: str, path: Path) -> None:
    """The page of one registration (its dense cloud when there is one)."""
    data = view_data(sfm_dir, scene)
    write_text_atomic(path, PAGE.replace("/*DATA*/null", json.dumps(data, separators=(",", ":")))
                      .replace("TITLE", f"scene {scene}: {sfm_dir.name}"))


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>TITLE</title>
<style>html, body { margin: 0; height: 100%; overflow: hidden; background: #fff; font-family: sans-serif; }
canvas { display: block; } #legend { position: absolute; top: 8px; left: 8px; font-size: 13px;
background: rgba(255,255,255,0.8); padding: 4px 8px; }</style></head>
<body><canvas id="view"></canvas><div id="legend"></div>
<script>
const data = /*DATA*/null;
const canvas = document.getElementById("view");
const context = canvas.getContext("2d");
const state = {yaw: 0.6, pitch: 0.6, distance: 1.6 * data.extent, target: [0, 0, 0]};
document.getElementById("legend").innerHTML = "<b>TITLE</b><br>" + data.layers.map(
  l => `<span style="color:${l.colour}">&#9632;</span> ${l.name}`).join("<br>") +
  "<br><small>drag: turn, shift-drag: move, wheel: zoom</small>";

function camera() {
  const cy = Math.cos(state.yaw), sy = Math.sin(state.yaw), cp = Math.cos(state.pitch), sp = Math.sin(state.pitch);
  // view axes in ENU (x east, y north, z up): looking at the target from above at `pitch`, turned by `yaw`
  const forward = [-cy * cp, -sy * cp, -sp], right = [-sy, cy, 0];
  const up = [right[1] * forward[2] - right[2] * forward[1], right[2] * forward[0] - right[0] * forward[2],
              right[0] * forward[1] - right[1] * forward[0]];
  const eye = state.target.map((t, k) => t - forward[k] * state.distance);
  return {eye, forward, right, up, focal: 0.9 * canvas.height};
}

function project(cam, x, y, z) {
  const d = [x - cam.eye[0], y - cam.eye[1], z - cam.eye[2]];
  const depth = d[0] * cam.forward[0] + d[1] * cam.forward[1] + d[2] * cam.forward[2];
  if (depth <= 1e-3 * data.extent) return null;
  const u = (d[0] * cam.right[0] + d[1] * cam.right[1] + d[2] * cam.right[2]) / depth;
  const v = (d[0] * cam.up[0] + d[1] * cam.up[1] + d[2] * cam.up[2]) / depth;
  return [canvas.width / 2 + cam.focal * u, canvas.height / 2 - cam.focal * v];
}

function draw() {
  canvas.width = window.innerWidth; canvas.height = window.innerHeight;
  context.fillStyle = "#fff"; context.fillRect(0, 0, canvas.width, canvas.height);
  const cam = camera();
  for (const layer of data.layers) {
    context.fillStyle = context.strokeStyle = layer.colour;
    context.lineWidth = layer.size;
    const p = layer.points || [];
    for (let k = 0; k < p.length; k += 3) {
      const q = project(cam, p[k], p[k + 1], p[k + 2]);
      if (q) context.fillRect(q[0], q[1], layer.size, layer.size);
    }
    const s = layer.segments || [];
    context.beginPath();
    for (let k = 0; k < s.length; k += 6) {
      const a = project(cam, s[k], s[k + 1], s[k + 2]), b = project(cam, s[k + 3], s[k + 4], s[k + 5]);
      if (a && b) { context.moveTo(a[0], a[1]); context.lineTo(b[0], b[1]); }
    }
    context.stroke();
  }
}

let last = null;
canvas.addEventListener("mousedown", e => { last = [e.clientX, e.clientY, e.shiftKey]; });
window.addEventListener("mouseup", () => { last = null; });
window.addEventListener("mousemove", e => {
  if (!last) return;
  const dx = e.clientX - last[0], dy = e.clientY - last[1];
  if (last[2]) {
    const cam = camera(), scale = state.distance / cam.focal;
    state.target = state.target.map((t, k) => t - (dx * cam.right[k] - dy * cam.up[k]) * scale);
  } else {
    state.yaw -= 0.005 * dx;
    state.pitch = Math.max(-1.5, Math.min(1.5, state.pitch + 0.005 * dy));
  }
  last = [e.clientX, e.clientY, last[2]];
  draw();
});
canvas.addEventListener("wheel", e => { e.preventDefault(); state.distance *= Math.exp(0.001 * e.deltaY); draw(); },
                        {passive: false});
window.addEventListener("resize", draw);
draw();
</script></body></html>
"""
