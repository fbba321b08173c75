"""speechfm.decode."""
