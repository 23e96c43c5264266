"""export stage (see docs/EXPORT.md and docs/DESIGN.md)."""
