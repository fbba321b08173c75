"""speechfm.data.corpora."""
