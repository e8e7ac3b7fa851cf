"""The README's "Your own model" and "Command line" examples run as written (offline, in a scratch folder)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[1]


def code_blocks(section: str, language: str) -> list[str]:
    """The ```language blocks of the README section whose heading is ``## section``."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.S)


def test_your_own_model_example_runs(tmp_path) -> None:
    [block] = code_blocks("Your own model", "python")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "CAM layer 'layer4'" in out.stderr and "CAM layer 'encoder.layers.encoder_layer_1.ln_1'" in out.stderr
    assert out.stdout.strip().endswith("True True")
    assert "torch.Size([2, 224, 224])" in out.stdout


def test_command_line_example_runs(tmp_path) -> None:
    Image.fromarray(data.coffee()).resize((120, 80)).save(tmp_path / "photo.jpg")
    block = code_blocks("Command line", "bash")[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for line in block.strip().splitlines():
        args = shlex.split(line)
        assert args[:3] == ["python", "-m", "helpers"]
        out = subprocess.run([sys.executable, *args[1:]], capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=600)
        assert out.returncode == 0, out.stderr
    files = {p.name for p in (tmp_path / "explanations").iterdir()}
    assert {"photo.json", "photo_gradcam.png", "photo_layercam.npy", "photo_hybrid.png"} <= files
