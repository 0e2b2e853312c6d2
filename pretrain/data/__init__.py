"""Data loading: datasets, transforms and samplers (the synthetic world that writes data is :mod:`pretrain.synthetic`)."""
