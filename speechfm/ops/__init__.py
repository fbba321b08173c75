"""speechfm.ops."""
