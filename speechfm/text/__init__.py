"""speechfm.text."""
