"""Exception types shared across speechfm.

Every error raised for bad user input names the offending file or utterance and what is
wrong with it, so that a user can fix the data without reading a traceback.
"""

from __future__ import annotations


class SpeechfmError(Exception):
    """Base class for errors speechfm raises on purpose (bad input, bad config)."""


class DataError(SpeechfmError, ValueError):
    """A file, utterance or manifest is unusable; the message says which and why."""


class AudioError(DataError):
    """An audio file cannot be used: missing, unreadable, empty, non-finite or too long."""
