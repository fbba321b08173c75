"""speechfm.features."""
