"""The model store: a model's files found (here, or in the model index and downloaded) and verified."""
