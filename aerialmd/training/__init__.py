"""Training-side code: the DUSt3R/MASt3R dataset over the exported data."""
