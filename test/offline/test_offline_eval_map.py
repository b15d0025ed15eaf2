"""netvlad_ros.offline.eval_map: Recall@N and precision/recall on hand-made data, and an
end-to-end evaluation (real model, real map files, JSON and PNG outputs)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from netvlad_ros.offline.build_map import BuildMapError, FrameSource, build_map
from netvlad_ros.offline.eval_map import eval_map, format_eval, precision_recall_sweep, recall_at_n


def test_recall_at_n_by_hand() -> None:
    correct = np.array(
        [
            [True, False, False],  # right at rank 1
            [False, False, True],  # right at rank 3
            [False, False, False],  # never
            [False, True, True],  # right at rank 2
        ]
    )
    assert recall_at_n(correct, (1, 2, 3, 5)) == {1: 0.25, 2: 0.5, 3: 0.75, 5: 0.75}
    assert recall_at_n(correct, (1, 3), valid=np.array([True, True, False, False])) == {1: 0.5, 3: 1.0}
    assert np.isnan(recall_at_n(correct, (1,), valid=np.zeros(4, bool))[1])


def test_precision_recall_sweep_by_hand() -> None:
    s = precision_recall_sweep(
        np.array([0.5, 0.9, 0.8, 0.8]), np.array([False, True, False, True]), n_positive=4
    )
    # thresholds 0.9 -> 1 accepted, 1 right; 0.8 -> 3 accepted (tie), 2 right; 0.5 -> 4 accepted, 2 right
    assert s["thresholds"] == [0.9, 0.8, 0.5]
    assert s["precision"] == pytest.approx([1.0, 2 / 3, 0.5])
    assert s["recall"] == pytest.approx([0.25, 0.5, 0.5])
    # F1: 0.4, 4/7, 0.5
    assert s["best_f1"] == pytest.approx(4 / 7) and s["best_f1_threshold"] == 0.8
    assert s["recall_at_100_precision"] == 0.25


@pytest.fixture(scope="module")
def extractor(small_model):
    from netvlad_ros.model import DescriptorExtractor

    return DescriptorExtractor(small_model, device="cpu", batch_size=8)


def test_eval_map_end_to_end(tmp_path, extractor) -> None:
    from support import make_scene

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(8):
        cv2.imwrite(str(folder / f"f{i}.png"), make_scene(100 + i, 120, 160))
    truth = tmp_path / "truth.csv"
    truth.write_text("index,x,y\n" + "".join(f"{i},{2 * i},0\n" for i in range(8)))
    build_map(
        tmp_path / "map", FrameSource(images=folder, poses_csv=truth), extractor=extractor, progress=False
    )
    # the same images as queries; frames 4..7 are given the positions of frames 3..0 (wrong by >= 2 m)
    wrong = tmp_path / "query.csv"
    wrong.write_text("index,x,y\n" + "".join(f"{i},{2 * (i if i < 4 else 7 - i)},0\n" for i in range(8)))
    out_json, out_png = tmp_path / "r" / "eval.json", tmp_path / "r" / "eval.png"
    r = eval_map(tmp_path / "map", FrameSource(images=folder, poses_csv=wrong), radius_m=1.0, extractor=extractor,
                 output_json=out_json, output_png=out_png, progress=False)  # fmt: skip
    # identical images retrieve themselves first: right for frames 0..3 only
    assert r["queries"] == 8 and r["queries_without_positive"] == 0
    assert r["recall_at"]["1"] == 0.5
    assert r["recall_at"]["20"] == 1.0  # top-20 of 8 keyframes holds every keyframe
    rec = [r["recall_at"][k] for k in ("1", "5", "10", "20")]
    assert rec == sorted(rec)
    loc = r["localizer"]
    assert loc["true_positives"] <= 4 and loc["accepted"] == loc["true_positives"] + loc["false_positives"]
    assert loc["accepted"] + sum(loc["not_accepted"].values()) == 8
    assert r["top1_sweep"]["recall"][-1] == 0.5
    assert json.loads(out_json.read_text())["recall_at"] == r["recall_at"]
    png = cv2.imread(str(out_png))
    assert png is not None and png.shape[1] > png.shape[0] > 200
    assert "R@1 0.500" in format_eval(r)
    # at 25 m every keyframe is near every query: all right
    r25 = eval_map(
        tmp_path / "map", FrameSource(images=folder, poses_csv=wrong), extractor=extractor, progress=False
    )
    assert r25["recall_at"]["1"] == 1.0
    with pytest.raises(BuildMapError, match="map not found"):
        eval_map(tmp_path / "nomap", FrameSource(images=folder, poses_csv=wrong), extractor=extractor)
    with pytest.raises(BuildMapError, match="no pose source"):
        eval_map(tmp_path / "map", FrameSource(images=folder), extractor=extractor)
