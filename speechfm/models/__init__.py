"""speechfm.models."""
