"""Running a bundled network without torch: musicnn's log-mel in numpy and its ONNX export.

Nothing here imports torch, so a process that classifies with ``--precision auto`` on the CPU
(the default) never loads it once the model's export is in the user cache. The export itself is
made on the PyTorch side (`genretag.nets.onnx_runtime`) the first time a model is used.
"""

from genretag.runtime.frontend import musicnn_logmel
from genretag.runtime.onnx import ExportRecord, OnnxNet, OnnxUnavailable, card_key, open_export

__all__ = ["ExportRecord", "OnnxNet", "OnnxUnavailable", "card_key", "musicnn_logmel", "open_export"]
