"""export stage (see README and docs/DESIGN.md)."""
