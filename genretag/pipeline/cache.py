"""The old address of the local executor and the result cache, kept for importers: the names live in
`genretag.pipeline.classifier` (`Classifier`, `classify_cached`), `genretag.pipeline.result_cache`
(`ResultCache`, `UnusableCache`, `model_id`, `default_cache_path`) and `genretag.pipeline.executor`
(`CacheStats`)."""

from genretag.pipeline.classifier import Classifier, classify_cached
from genretag.pipeline.executor import CacheStats
from genretag.pipeline.result_cache import ResultCache, UnusableCache, default_cache_path, model_id

__all__ = ["CacheStats", "Classifier", "ResultCache", "UnusableCache", "classify_cached", "default_cache_path",
           "model_id"]
