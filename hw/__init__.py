"""hw stage (see docs/SIMULATE.md, docs/MAPPING.md and docs/DESIGN.md)."""
