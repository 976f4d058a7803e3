"""WEINCE for cupy (in progress)."""
