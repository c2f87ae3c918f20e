"""The pipeline's stages, one module each, named like the scripts users run (see the README's code map)."""
