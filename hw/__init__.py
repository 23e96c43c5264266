"""hw stage (see README and DESIGN.md)."""
