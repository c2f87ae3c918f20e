"""Geometry and conventions: camera matrices and pixel/pose conventions, projection, geodesy (GES sphere, ENU)."""
