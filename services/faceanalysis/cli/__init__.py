"""The `faceanalysis` command."""
