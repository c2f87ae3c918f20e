"""The appearance gap between Google Earth renders and tourist photos, as the sample scene models it.

Google Earth Studio renders a textured photogrammetry mesh: its textures hold about 10-30 cm per texel whatever the
camera's distance, light and shadows are baked in at one time of day, and small movable things (cars, people) are
missing. Tourist photos resolve every detail, are taken at any time of day or under clouds, show the cars and people
of their moment, and carry their camera's noise and JPEG compression. Every effect is one `AppearanceGap` field, so
each can be measured on and off; the ground truth stays exact in both worlds (a photo's true depth includes its own
cars and people, the aerial truth has none). Each effect draws from a random stream of its own, so the rest of the
sample is the same with or without it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aerialmd.sample_scene.render import AMBIENT, DIFFUSE, Lighting, Look
from aerialmd.sample_scene.textures import Texture, fractal_noise, mip_pyramid
from aerialmd.sample_scene.world import Box, World

LIGHTING_STREAM, TRANSIENT_STREAM, CAMERA_STREAM = 3, 4, 5  # the effects' random streams (np.random.default_rng)
OVERCAST = Lighting(sun_direction=(0.0, 0.0, 1.0), ambient=0.62, diffuse=0.38, shadows=False)  # light from the sky
# (half length, half width, height range) of what people leave standing around a landmark, metres
PERSON = ((0.22, 0.18), (1.55, 1.9))
CAR = ((2.2, 0.9), (1.35, 1.6))


@dataclasses.dataclass(frozen=True)
class AppearanceGap:
    """What differs between the aerial renders and the ground photos (see the module doc). `off()`: none of it."""

    aerial_texel_m: float = 0.2  # finest texture detail of the aerial renders (GES mesh textures: 10-30 cm)
    cast_shadows: bool = True  # buildings cast shadows: baked into the aerial renders, the photos' own in the photos
    photo_sun: bool = True  # each photo has its own time of day (sun azimuth any, elevation 15-65 deg)
    overcast_share: float = 0.3  # of the photos, taken under clouds: soft light from the sky, no shadows
    transients_per_photo: float = 4.0  # mean number of cars and people in a photo, in that photo only
    photo_noise_std: float = 2.5  # the photos' sensor noise (grey levels, standard deviation)
    photo_jpeg_quality: tuple[int, int] = (70, 95)  # range of the photos' JPEG quality

    @classmethod
    def off(cls) -> "AppearanceGap":
        """Photos and aerial renders of one world in one light, as the sample was before the gap was modelled."""
        return cls(aerial_texel_m=0.0, cast_shadows=False, photo_sun=False, overcast_share=0.0,
                   transients_per_photo=0.0, photo_noise_std=0.0, photo_jpeg_quality=(95, 95))

    def aerial_look(self) -> Look:
        """The aerial renders' look: the GES sun, its shadows baked in, coarse textures."""
        return Look(Lighting(shadows=self.cast_shadows), self.aerial_texel_m)

    def photo_looks(self, seed: int, count: int) -> list[Look]:
        """Every photo's look: its own sun or clouds (or the GES sun without `photo_sun`), full texture detail."""
        if not self.photo_sun:
            return [Look(Lighting(shadows=self.cast_shadows))] * count
        rng = np.random.default_rng([seed, LIGHTING_STREAM])
        looks = []
        for _ in range(count):
            azimuth, elevation = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(15.0, 65.0))
            sun = (np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation))
            overcast = rng.random() < self.overcast_share
            looks.append(Look(OVERCAST if overcast else Lighting(tuple(float(c) for c in sun), AMBIENT, DIFFUSE,
                                                                 self.cast_shadows)))
        return looks

    def camera_effects(self, seed: int, index: int, rgb: np.ndarray) -> tuple[np.ndarray, int]:
        """Photo `index` with its sensor noise, and the JPEG quality it is saved at."""
        rng = np.random.default_rng([seed, CAMERA_STREAM, index])
        low, high = self.photo_jpeg_quality
        quality = int(rng.integers(low, high + 1))
        if self.photo_noise_std <= 0:
            return rgb, quality
        noisy = rgb.astype(np.float32) + rng.normal(0.0, self.photo_noise_std, rgb.shape).astype(np.float32)
        return np.clip(noisy + 0.5, 0, 255).astype(np.uint8), quality


def transients_in_view(seed: int, index: int, world: World, cam2world: np.ndarray, fov_x: float,
                       mean_count: float, max_tries: int = 50) -> tuple[tuple[Box, ...], tuple[Texture, ...]]:
    """Cars and people standing 3-30 m in front of photo `index` (within its horizontal field of view `fov_x`,
    radians), on the ground, outside the buildings and not on the camera, each with its textures in World's face
    order; drawn from the photo's own random stream."""
    rng = np.random.default_rng([seed, TRANSIENT_STREAM, index])
    count = int(rng.poisson(mean_count)) if mean_count > 0 else 0
    centre = cam2world[:3, 3]
    heading = np.arctan2(cam2world[1, 2], cam2world[0, 2])
    boxes: list[Box] = []
    textures: list[Texture] = []
    for _ in range(max_tries):
        if len(boxes) == count:
            break
        half_extent, heights = CAR if rng.random() < 0.4 else PERSON
        distance = rng.uniform(3.0, 30.0)
        angle = heading + rng.uniform(-0.45, 0.45) * fov_x
        position = centre[:2] + distance * np.array([np.cos(angle), np.sin(angle)])
        box = Box(position, np.array(half_extent), float(rng.uniform(*heights)), float(rng.uniform(0, np.pi)))
        if any(other.contains(np.append(position, 0.5), margin=float(max(half_extent)) + 0.5)
               for other in world.boxes + boxes) or np.linalg.norm(position - centre[:2]) < 1.5 + max(half_extent):
            continue
        boxes.append(box)
        textures += transient_textures(rng, box)
    return tuple(boxes), tuple(textures)


def transient_textures(rng: np.random.Generator, box: Box, texel_m: float = 0.03) -> list[Texture]:
    """A car's or person's faces (walls, then top): one saturated colour with darker blotches, like paint or clothes."""
    colour = rng.uniform(0.1, 0.95, 3).astype(np.float32)
    out = []
    for width_m, height_m in box.face_sizes():
        shape = (max(16, int(np.ceil(height_m / texel_m))), max(16, int(np.ceil(width_m / texel_m))))
        image = (0.45 + 0.55 * fractal_noise(rng, shape, 0.4 / texel_m, octaves=4)) * colour
        out.append(Texture(mip_pyramid(np.clip(image, 0, 1).astype(np.float32)), texel_m))
    return out


def with_transients(world: World, boxes: tuple[Box, ...], textures: tuple[Texture, ...]) -> World:
    """The world with a photo's cars and people added after its own boxes (the surfaces keep their indices)."""
    if not boxes:
        return world
    return World(world.boxes + list(boxes), world.ground_extent_m, world.textures + list(textures))

