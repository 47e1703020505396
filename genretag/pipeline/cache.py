"""The old address of the local executor and the result cache, kept for importers: the names live in
`genretag.pipeline.classifier` (`Classifier`), `genretag.pipeline.result_cache` (`ResultCache`,
`UnusableCache`, `model_id`, `default_cache_path`) and `genretag.pipeline.executor` (`CacheStats`).
genretag 0.1's `classify_cached` is served here with a `DeprecationWarning`."""

from genretag.deprecation import deprecated, no_attribute
from genretag.pipeline.classifier import Classifier, _classify_cached
from genretag.pipeline.executor import CacheStats
from genretag.pipeline.result_cache import ResultCache, UnusableCache, default_cache_path, model_id

__all__ = ["CacheStats", "Classifier", "ResultCache", "UnusableCache", "default_cache_path", "model_id"]


def __getattr__(name: str):
    if name == "classify_cached":
        deprecated(f"{__name__}.classify_cached", "genretag.pipeline.cache.Classifier(model, ...).classify(paths)")
        return _classify_cached
    raise no_attribute(__name__, name)
