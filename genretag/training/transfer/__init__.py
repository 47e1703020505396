"""Transfer learning from the pretrained musicnn MSD tagger to GTZAN genres.

Four ways to get a genre model out of the tagger, all selected on the valid
split and measured on the test split exactly as `genretag evaluate` would:

- head: embeddings of every sub-track are extracted once with the frozen
  tagger (cached on disk) and a small head (logistic regression or an MLP
  with dropout; AdamW, classes balanced) is trained on them. Pooling set,
  head size and weight decay are chosen on valid.
- finetune: starting from the best head, the trunk is trained too (low LR,
  BatchNorm statistics frozen, random crops + gain + noise, optional mixup);
  by default the front-end convolutions (~90 % of the arithmetic) stay frozen.
- zeroshot: no training at all: MSD tags are mapped to genres by name.
- ensemble: a card averaging members' probabilities (e.g. musicnn + ResNet).

Every model is temperature-calibrated on valid and written with save_model.

The modules, in the order a run uses them: config (`TransferConfig`), data (the split and its
audio), embeddings (the frozen trunk's pooled outputs, cached), scores (valid rows and grid rows),
heads (one head, the grid, the bag), prior (the zero-shot prior a head adds), cards (the card,
calibration, save and measure), then one module per mode: head_model, finetune, zeroshot,
ensembles. This package's namespace holds the public names of all of them.
"""

from genretag.training.transfer.cards import finish_model, measure, transfer_card
from genretag.training.transfer.config import POOLING_CHOICES, TransferConfig
from genretag.training.transfer.data import Data, library_data, load_data, subset_segments, train_offsets
from genretag.training.transfer.embeddings import Embedder, as_stored, extract_embeddings, load_tagger, trunk_digest
from genretag.training.transfer.ensembles import adapt_waves, make_ensemble, run_ensemble
from genretag.training.transfer.finetune import run_finetune, set_trainable
from genretag.training.transfer.head_model import HeadChoice, HeadModel, HeadRun, run_head
from genretag.training.transfer.heads import (
    HeadData,
    HeadResult,
    HeadSpec,
    ValidRows,
    choose_bag,
    fit_head,
    load_heads,
    train_head,
)
from genretag.training.transfer.prior import ZEROSHOT_MAPPINGS, choose_prior, prior_card, prior_offset, require_msd_tags
from genretag.training.transfer.scores import row_score, split_rows, track_metrics, valid_row
from genretag.training.transfer.zeroshot import run_zeroshot

__all__ = [
    "POOLING_CHOICES", "ZEROSHOT_MAPPINGS", "Data", "Embedder", "HeadChoice", "HeadData", "HeadModel",
    "HeadResult", "HeadRun", "HeadSpec", "TransferConfig", "ValidRows", "adapt_waves", "as_stored",
    "choose_bag", "choose_prior", "extract_embeddings", "finish_model", "fit_head", "library_data",
    "load_data", "load_heads", "load_tagger", "make_ensemble", "measure", "prior_card", "prior_offset",
    "require_msd_tags", "row_score", "run_ensemble", "run_finetune", "run_head", "run_zeroshot",
    "set_trainable", "split_rows", "subset_segments", "track_metrics", "train_head", "train_offsets",
    "transfer_card", "trunk_digest", "valid_row",
]
