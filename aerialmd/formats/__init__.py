"""File formats, each read and written in one module: GES JSON and .esp, depth (EXR, h5), hloc h5, DUSt3R pair npz,
the COLMAP dense layout, MegaDepth cameras, videos and scene lists."""
