"""speechfm.losses."""
