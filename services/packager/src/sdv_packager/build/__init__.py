"""Turning an app directory into a reproducible, signed package artifact."""
