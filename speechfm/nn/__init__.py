"""speechfm.nn."""
