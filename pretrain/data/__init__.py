"""Data utilities: datasets, transforms and the synthetic data generator."""
