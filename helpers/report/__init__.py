"""Presenting the study: the answer, leaderboards, figures, verdict prose and REPORT.md, from the study's files.

:mod:`.present` computes the answer (the confirmatory family and one verdict line per claim), the
leaderboards and the figures REPORT.md links; :mod:`.sections` the further sections (sanity, layers,
models, ROAD, adaptive a, consistency); :mod:`.render` writes REPORT.md and the README's "Results at a
glance" block; :mod:`.regenerate` is ``python -m helpers study report`` (all of it from the files alone).
:mod:`.figures`, :mod:`.plots`, :mod:`.leaderboard`, :mod:`.verdict` and :mod:`.protocol` are their pieces.
"""
