"""Logits to probabilities in numpy: the one softmax and sigmoid genretag computes outside torch.

The model stage turns a network's logits into a card's probabilities with them (`card_probabilities`),
whichever runtime produced the logits; the ONNX export's probe check and the training code use the
same two functions.
"""

from __future__ import annotations

import numpy as np

from genretag.card import ModelCard


def softmax(z: np.ndarray) -> np.ndarray:
    """Probabilities from logits along the last axis, in the logits' float type."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Each logit's own probability (a multi-label tagger's tags); no overflow for large |z|."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def card_probabilities(logits: np.ndarray, card: ModelCard) -> np.ndarray:
    """Temperature-scaled logits (batch, labels) -> float32 probabilities as the card reads them:
    sigmoid for a multi-label tagger (``extra.multilabel``), else softmax."""
    x = np.asarray(logits, dtype=np.float32)
    return (sigmoid(x) if card.extra.get("multilabel") else softmax(x)).astype(np.float32, copy=False)
