"""The ``netvlad-ros`` console script, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from support import make_scene

CLI = str(Path(sys.executable).parent / "netvlad-ros")


def run(*args, check=True):
    proc = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_describe_a_folder(tmp_path, small_model):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.jpg"), make_scene(100 + i))
    cv2.imwrite(str(folder / "sub" / "10.png"), make_scene(100))  # same scene as 0.jpg, lossless
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "desc.npz"
    proc = run("describe", folder, "-o", out, "--model", small_model, "--device", "cpu")
    assert "described 6 images" in proc.stdout
    assert "broken.jpg" in proc.stderr  # skipped and said so, not fatal
    data = np.load(out, allow_pickle=False)
    paths = list(data["paths"])
    assert paths == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg", "sub/10.png"]
    d = data["descriptors"]
    assert d.shape == (6, 896) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    sims = d @ d[0]
    assert np.argsort(-sims)[1] == 5  # the re-encoded copy of scene 0 is its nearest neighbour
    card = json.loads(run("info", small_model, "--json").stdout)
    assert str(data["model_fingerprint"]) == card["fingerprint"]


def test_init_clusters_then_info(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i}.png"), make_scene(200 + i))
    model = tmp_path / "mine.safetensors"
    run(
        "init-clusters",
        "--images",
        folder,
        "-o",
        model,
        "--clusters",
        "4",
        "--max-side",
        "320",
        "--device",
        "cpu",
    )
    info = run("info", model, "--verify").stdout
    assert "K=4" in info and "448-D" in info and "(verified)" in info
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["num_clusters"] == 4 and card["provenance"]["images"] == 6


def test_errors_are_reported_not_raised(tmp_path):
    proc = run("describe", tmp_path / "missing", "--model", tmp_path / "m.safetensors", check=False)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run("init-clusters", "--images", empty, "-o", tmp_path / "x.safetensors", check=False)
    assert proc.returncode == 2 and "no images" in proc.stderr
