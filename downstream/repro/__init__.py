"""Reproduction of the papers' tables: one module per table, run as ``vitmix-repro TABLE [args]``
(or ``python tools/repro/TABLE.py [args]``).

Each table module (:mod:`downstream.repro.tables`) describes its table as rows of subprocess steps
that call the project's own tools (``tools/pretrain.sh``, ``mim train`` / ``mim test``,
``tools/train_d2.py``, ``tools/analyze.py``, ``tools/bench_mixers.py``) and reads the numbers back
from the files those tools write. The shared machinery, one concern per module:

* :mod:`.paths`: where the checkout, the data and the runs are;
* :mod:`.errors`: a bad request (:class:`~.errors.ReproError`) and a missing result
  (:class:`~.errors.Missing`, :class:`~.errors.NoDetections`);
* :mod:`.args`: the common command line;
* :mod:`.pretrained`: the ImageNet pretraining runs the other tables start from;
* :mod:`.scaling`: ``--scale`` applied to epoch and iteration schedules, and the per-tool overrides;
* :mod:`.configs`: the real config loaders (MMEngine, Detectron2 LazyConfig, pretraining YAML);
* :mod:`.rows`: rows and steps, and the state of a row's folder;
* :mod:`.steps`: the step of each tool (pretraining, ``mim``, analysis);
* :mod:`.results`: readers of finished runs (pretraining, MMEngine, Detectron2, analysis, MixMo);
* :mod:`.runner`: dry-run plan, running the steps, the flow every table shares;
* :mod:`.table` and :mod:`.papers`: the table (ours next to the paper's number and its source).

The tables drive the checkout's ``tools/`` and ``configs/``: use an editable install
(``pip install -e .``, as ``tools/setup.sh`` does).
"""
