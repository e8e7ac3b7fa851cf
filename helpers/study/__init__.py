"""The whole study as data: its definition, the runner of stages and shards, merging, verification.

:mod:`.spec` defines what runs (``full`` and ``quick``), :mod:`.parts` what each kind of part
computes, :mod:`.run` runs stages and shards resumably with a hash per part, :mod:`.store` reads and
writes the Parquet files and ``PROVENANCE.json``, :mod:`.merge` joins shards, :mod:`.distributed`
schedules the same plan on Dask, :mod:`.verify` recomputes a sample of committed rows, and
:mod:`.cli` is ``python -m helpers study``. The presentation reads it back: :mod:`.results` loads the
committed parts and checks each part's hash against the code, :mod:`.present` computes the answer,
leaderboards and figures, :mod:`.sections` the further sections, :mod:`.report` writes REPORT.md.
"""
