"""The torch architectures, rebuilt from a model card."""
