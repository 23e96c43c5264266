"""Lava processes of this project (``recorder``). Kept in a package of their own: Lava's compiler
imports every module in the directory of a process's module when it looks for process models."""
