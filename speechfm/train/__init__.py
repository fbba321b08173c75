"""speechfm.train."""
