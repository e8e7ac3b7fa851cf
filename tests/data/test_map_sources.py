"""Maps from outside the package: file formats, the checks (one line naming the file and key), resizing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.cam.maps import normalise_max, upsample
from helpers.data.map_sources import (
    check_map,
    check_source,
    from_callable,
    from_file,
    from_mapping,
    parse_maps_option,
    sha256_of,
    source_maps,
)

FILES = ["cls_a/one.JPEG", "cls_b/two.png"]


def _images(n: int = 2, size: int = 8) -> torch.Tensor:
    return torch.zeros(n, 3, size, size)


def test_a_map_is_resized_bilinearly_and_scaled_by_its_maximum():
    # 1 x 2 -> 1 x 4, bilinear without corner alignment: [0, 0.5, 1.5, 2], then / 2
    source = from_mapping("mine", {"a.png": np.array([[0.0, 2.0]])})
    out = source_maps(source, ["a.png"], torch.zeros(1, 3, 1, 4), torch.tensor([0]))
    assert torch.allclose(out, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))


def test_maps_at_any_resolution_equal_the_packages_own_resizing():
    rng = np.random.default_rng(0)
    raw = {"a.png": rng.random((7, 7)), "b.png": rng.random((13, 5))}
    out = source_maps(from_mapping("m", raw), ["a.png", "b.png"], _images(size=16), torch.tensor([0, 1]))
    for i, key in enumerate(raw):
        want = normalise_max(upsample(torch.from_numpy(raw[key]).float()[None], (16, 16)))[0]
        assert torch.equal(out[i], want)


def test_an_all_zero_map_gives_zeros_not_nan():
    out = source_maps(from_mapping("m", {"a.png": np.zeros((3, 3))}), ["a.png"], _images(1), torch.tensor([0]))
    assert torch.equal(out, torch.zeros(1, 8, 8))


@pytest.mark.parametrize("bad, words", [
    (np.zeros((1, 3, 3)), "must be 2-D"), (np.zeros(5), "must be 2-D"),
    (np.array([[0.0, np.nan]]), "1 NaN or infinite"), (np.array([[np.inf, 1.0]]), "NaN or infinite"),
    (np.array([[-0.5, 1.0]]), "negative values"), (np.array([["a", "b"]]), "must hold numbers"),
    (np.zeros((0, 4)), "empty")])
def test_bad_maps_get_one_line_naming_where(bad, words):
    with pytest.raises(ValueError, match=words) as info:
        check_map(bad, "maps.npz, key 'x.png'")
    assert str(info.value).startswith("maps.npz, key 'x.png'") and "\n" not in str(info.value)


def test_npz_keyed_by_relative_file_names(tmp_path):
    path = tmp_path / "maps.npz"
    np.savez(path, **{FILES[0]: np.ones((7, 7)), FILES[1]: np.eye(4)})
    source = from_file("theirs", path)
    check_source(source, FILES)
    assert source.provenance == {"path": str(path), "sha256": sha256_of(path)}
    assert len(source.provenance["sha256"]) == 64
    out = source_maps(source, FILES, _images(), torch.tensor([0, 0]))
    assert out.shape == (2, 8, 8) and float(out.amax()) == 1.0


def test_a_folder_of_npy_files_with_the_images_names(tmp_path):
    for f in FILES:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        np.save((tmp_path / f).with_suffix(".npy"), np.ones((5, 5)))
    source = from_file("theirs", tmp_path)
    check_source(source, FILES)
    assert source.keys == {"cls_a/one", "cls_b/two"}
    assert source_maps(source, FILES, _images(), torch.tensor([0, 0])).shape == (2, 8, 8)


def test_missing_and_extra_keys_are_named(tmp_path):
    path = tmp_path / "maps.npz"
    np.savez(path, **{FILES[0]: np.ones((3, 3)), "stray.png": np.ones((3, 3))})
    with pytest.raises(ValueError, match=r"no map for 1 image\(s\), e.g. key 'cls_b/two.png'"):
        check_source(from_file("t", path), FILES)
    np.savez(path, **{FILES[0]: np.ones((3, 3)), FILES[1]: np.ones((3, 3)), "stray.png": np.ones((3, 3))})
    with pytest.raises(ValueError, match=r"1 map\(s\) for no image, e.g. key 'stray.png'"):
        check_source(from_file("t", path), FILES)


def test_a_bad_map_in_a_file_is_named_by_file_and_key(tmp_path):
    path = tmp_path / "maps.npz"
    np.savez(path, **{FILES[0]: np.ones((3, 3)), FILES[1]: np.full((2, 2), np.nan)})
    with pytest.raises(ValueError, match=rf"{path}, key 'cls_b/two.png': the map has 4 NaN"):
        check_source(from_file("t", path), FILES)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "maps.npz"
    np.savez(path, **{FILES[0]: np.array([{"evil": 1}], dtype=object), FILES[1]: np.ones((2, 2))})
    with pytest.raises(ValueError, match=r"key 'cls_a/one.JPEG'.*allow_pickle=False"):
        check_source(from_file("t", path), FILES)


@pytest.mark.parametrize("text", ["noequals", "=x.npz", "name=", " = "])
def test_the_option_wants_name_equals_path(text):
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_maps_option(text)


def test_paths_that_are_not_maps_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        parse_maps_option(f"x={tmp_path / 'nope.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        from_file("x", tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", np.ones((2, 2)))
    with pytest.raises(ValueError, match="holds one array"):
        from_file("x", tmp_path / "one.npy")


def test_a_callable_source_gets_images_and_classes_and_may_return_captum_shapes():
    seen = {}

    def fn(images, classes):
        seen["shapes"] = (tuple(images.shape), classes.tolist())
        return torch.ones(len(images), 1, 2, 2)  # Captum's (N, 1, h, w)

    out = source_maps(from_callable("captum", fn), FILES, _images(), torch.tensor([3, 4]))
    assert seen["shapes"] == ((2, 3, 8, 8), [3, 4]) and torch.equal(out, torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match=r"expected maps \(N=2, h, w\), got shape \(1, 2, 2\)"):
        source_maps(from_callable("bad", lambda i, c: np.ones((1, 2, 2))), FILES, _images(), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="image cls_a/one.JPEG: the map has negative"):
        source_maps(from_callable("neg", lambda i, c: -torch.ones(2, 2, 2)), FILES, _images(), torch.tensor([0, 0]))
