"""export stage (see README and DESIGN.md)."""
