"""Training, evaluation, tuning and transfer on GTZAN: the `[train]` extra."""
