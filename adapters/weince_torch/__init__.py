"""WEINCE for torch (in progress)."""
