"""AerialMegaDepth data generation: Google Earth Studio renders + MegaDepth photos -> aligned aerial-ground training data."""

__version__ = "0.1.0"
