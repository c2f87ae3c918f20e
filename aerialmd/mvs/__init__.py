"""Multi-view stereo: the plane sweep, source-view selection, hole filling."""
