"""speechfm.data."""
