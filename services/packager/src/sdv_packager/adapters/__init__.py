"""Thin adapters of the packager: the command router on `sdv.cmd.packager.*` (`commands.py`) and
the artifacts in the object store bucket `sdv_packages` (`artifacts.py`)."""
