"""The lecture notebooks' setup call: the model, the samples, the figure folder and the worked photo."""
from __future__ import annotations

import pytest

from helpers.teaching.setup import lesson, packaged_photo


def test_lesson_opens_with_the_worked_photo(tmp_path, capsys) -> None:
    found = lesson("figs", photo="coffee", root=tmp_path)
    assert found.fig_dir == tmp_path / "figs" and found.fig_dir.is_dir()
    assert found.photo.file == "photo_coffee.png" and found.c == found.photo.label_idx
    assert tuple(found.x.shape) == (1, 3, 224, 224)
    assert "photo_coffee.png" in capsys.readouterr().out
    with pytest.raises(ValueError, match="valid: photo_chelsea.png"):
        packaged_photo(found.samples, "no such photo")
