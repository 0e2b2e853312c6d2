"""The pretraining engine: the loop (:mod:`.train`, ``train(cfg)``), one optimizer step (:mod:`.step`), the
optimizer and schedule (:mod:`.optim`), the run's counters and resume checkpoints (:mod:`.resume`), logs and
stop signals (:mod:`.runlog`), generator states (:mod:`.rng`) and configs (:mod:`.config`). Methods plug in
as objectives (:mod:`pretrain.objectives`); the engine imports none by name. Nothing is re-exported here:
import from the module that defines a name (``from pretrain.engine.train import train``).
"""
