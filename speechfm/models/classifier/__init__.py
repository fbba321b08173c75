"""The Conformer audio-classifier family (``"classifier"``): the shared speech front end
(the encoder every ASR and self-supervised family holds) with utterance pooling and a
classifier head, for keyword spotting and speaker / language identification."""

from speechfm.models.classifier.config import (
    POOLINGS,
    ClassifierModelConfig,
    classifier_kws,
    classifier_small,
    classifier_tiny,
)
from speechfm.models.classifier.model import SpeechClassifier, create_classifier_model

__all__ = [
    "POOLINGS",
    "ClassifierModelConfig",
    "SpeechClassifier",
    "classifier_kws",
    "classifier_small",
    "classifier_tiny",
    "create_classifier_model",
]
