"""hw stage (see README and docs/DESIGN.md)."""
