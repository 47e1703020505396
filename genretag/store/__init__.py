"""The model store: cards, local lookup, the model index and downloads, loading."""
