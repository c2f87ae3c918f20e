"""Command-line front ends: one module per script users run (the scripts at the repository root are shims)."""
