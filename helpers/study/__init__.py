"""The whole study as data: its definition, the runner of stages and shards, merging, verification.

:mod:`.spec` defines what runs (``full`` and ``quick``), :mod:`.parts` what each kind of part
computes, :mod:`.run` runs stages and shards resumably with a hash per part, :mod:`.store` reads and
writes the Parquet files and ``PROVENANCE.json``, :mod:`.merge` joins shards, :mod:`.distributed`
schedules the same plan on Dask, :mod:`.verify` recomputes a sample of committed rows, and
:mod:`.cli` is ``python -m helpers study``, :mod:`.folder` is ``python -m helpers evaluate`` (a folder of
photos as a study of one part). :mod:`.results` reads the parts back, each checked against the code;
:mod:`.adaptive` answers the adaptive-a question from the files. Presenting them is :mod:`helpers.report`.
"""
