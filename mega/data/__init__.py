"""Data: files -> samples, in three rooms, each with one registry and its own config group.

- :mod:`mega.data.motion`: AMASS-format motion (per-frame SMPL parameters) for tokenizer training and
  pre-training; ``MOTION_DATASETS``, config group ``motion`` (``motion=amass``).
- :mod:`mega.data.images`: image datasets (SPIN / BEDLAM-CLIFF npz, webdataset shards, mixtures, the
  generated ``synthetic_images``) for HMR training; ``IMAGE_DATASETS``, config group ``images``.
- :mod:`mega.data.benchmarks`: evaluation indexes (3DPW, EMDB, the synthetic test split) and the views
  the evaluator reads; ``BENCHMARKS``, config group ``benchmark`` (``benchmark=3dpw``).

:mod:`mega.data.crop` (square crops, image decoding) is shared by images, benchmarks and the demo.
Rooms depend one way: benchmarks -> images -> motion; none imports the model.
"""
