"""energy stage (see README and DESIGN.md)."""
