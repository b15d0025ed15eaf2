"""Dataset readers (official .mat dbStruct, benchmark folders), mining against brute force, Recall@N."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from netvlad_ros.offline.datasets import (
    DatasetError,
    dataset_from_spec,
    read_folder_dataset,
    read_map_dataset,
    read_mat_dataset,
    read_pittsburgh,
)
from netvlad_ros.offline.evaluate import evaluate, recalls_from_descriptors
from netvlad_ros.offline.mining import HardNegativeMiner
from netvlad_ros.offline.train import TrainConfigError, load_config


def _cell(names):
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = n
    return cell


def _write_dbstruct(path, db_names, utm_db, q_names, utm_q, drop=None):
    """An official-style dbStruct, written the way MATLAB's struct arrays come out of scipy."""
    fields = {
        "whichSet": "train",
        "dbImageFns": _cell(db_names),
        "utmDb": np.asarray(utm_db, float).T,
        "qImageFns": _cell(q_names),
        "utmQ": np.asarray(utm_q, float).T,
        "numImages": float(len(db_names)),
        "numQueries": float(len(q_names)),
        "posDistThr": 25.0,
        "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    if drop:
        fields.pop(drop)
    savemat(str(path), {"dbStruct": fields})


def _img(seed):
    rng = np.random.default_rng(seed)
    return cv2.resize(
        rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_NEAREST
    )


@pytest.fixture
def pitts_root(tmp_path):
    root = tmp_path / "Pittsburgh"
    db_names = [f"000/00000{i}_pitch1_yaw{i}.jpg" for i in range(4)]
    q_names = [f"000/q{i}.jpg" for i in range(2)]
    for n in db_names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / n), _img(len(n)))
    for n in q_names:
        (root / "queries_real" / n).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "queries_real" / n), _img(7))
    (root / "datasets").mkdir()
    utm_db = [[585000.0 + 30 * i, 4477000.0 + i] for i in range(4)]
    _write_dbstruct(
        root / "datasets" / "pitts30k_train.mat",
        db_names,
        utm_db,
        q_names,
        [[585001.0, 4477000.0], [585090.0, 4477003.0]],
    )
    return root, db_names, utm_db


def test_mat_reader_parses_the_official_structure(pitts_root):
    root, db_names, utm_db = pitts_root
    ds = read_pittsburgh(root, "pitts30k_train")
    assert ds.split == "train" and ds.num_db == 4 and ds.num_queries == 2
    assert ds.db_images[2] == root / db_names[2]
    assert ds.q_images[1] == root / "queries_real" / "000/q1.jpg"
    np.testing.assert_array_equal(ds.db_utm, utm_db)
    np.testing.assert_array_equal(ds.q_utm[1], [585090.0, 4477003.0])
    assert ds.pos_dist_thr == 25.0 and ds.nontriv_pos_dist_sq_thr == 100.0
    assert ds.db_image(0).shape == (48, 64, 3)
    spec = dataset_from_spec({"format": "pittsburgh", "root": str(root), "split": "pitts30k_train"})
    assert spec.num_db == 4


def test_mat_reader_errors(pitts_root, tmp_path):
    root, db_names, utm_db = pitts_root
    with pytest.raises(DatasetError, match="not found"):
        read_pittsburgh(root, "pitts30k_val")
    (root / db_names[1]).unlink()
    with pytest.raises(DatasetError, match=r"database image not found: .*yaw1\.jpg"):
        read_pittsburgh(root)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"this is not a mat file at all" * 10)
    with pytest.raises(DatasetError, match=r"garbage\.mat"):
        read_mat_dataset(garbage, root, root)
    other = tmp_path / "other.mat"
    savemat(str(other), {"something": np.zeros(3)})
    with pytest.raises(DatasetError, match="no 'dbStruct'"):
        read_mat_dataset(other, root, root)
    short = tmp_path / "short.mat"
    _write_dbstruct(short, db_names, utm_db, ["q.jpg"], [[0.0, 0.0]], drop="utmQ")
    with pytest.raises(DatasetError, match="utmQ"):
        read_mat_dataset(short, root, root, check_files=False)
    empty = tmp_path / "empty.mat"
    _write_dbstruct(empty, db_names, utm_db, [], np.zeros((0, 2)))
    with pytest.raises(DatasetError, match="no queries"):
        read_mat_dataset(empty, root, root, check_files=False)
    wrong = tmp_path / "wrong.mat"
    _write_dbstruct(wrong, db_names, utm_db[:3], ["q.jpg"], [[0.0, 0.0]])
    with pytest.raises(DatasetError, match="utmDb"):
        read_mat_dataset(wrong, root, root, check_files=False)
    assert issubclass(DatasetError, ValueError)


def test_folder_reader_benchmark_layout(tmp_path):
    base = tmp_path / "pitts30k" / "images" / "test"
    for kind, pts in (("database", [(10.5, 20.0), (50.0, 60.25)]), ("queries", [(11.0, 21.0)])):
        (base / kind).mkdir(parents=True)
        for i, (e, n) in enumerate(pts):
            cv2.imwrite(str(base / kind / f"@{e}@{n}@17@T@40.4@-79.9@pano{i}@@@@@@@.jpg"), _img(i))
    ds = read_folder_dataset(tmp_path / "pitts30k", "test")
    assert ds.num_db == 2 and ds.num_queries == 1 and ds.name == "pitts30k"
    np.testing.assert_array_equal(ds.db_utm, [[10.5, 20.0], [50.0, 60.25]])
    np.testing.assert_array_equal(ds.q_utm, [[11.0, 21.0]])
    with pytest.raises(DatasetError, match="not found"):
        read_folder_dataset(tmp_path / "pitts30k", "val")
    cv2.imwrite(str(base / "queries" / "no_utm_here.jpg"), _img(3))
    with pytest.raises(DatasetError, match=r"no_utm_here\.jpg"):
        read_folder_dataset(tmp_path / "pitts30k", "test")
    (base / "queries" / "no_utm_here.jpg").unlink()
    for f in (base / "database").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="empty split"):
        read_folder_dataset(tmp_path / "pitts30k", "test")


def test_mining_matches_brute_force():
    rng = np.random.default_rng(3)
    db_utm = rng.uniform(0, 200, (300, 2))
    q_utm = rng.uniform(0, 200, (40, 2))
    db_desc = rng.normal(size=(300, 16)).astype(np.float32)
    db_desc /= np.linalg.norm(db_desc, axis=1, keepdims=True)
    q_desc = rng.normal(size=(40, 16)).astype(np.float32)
    q_desc /= np.linalg.norm(q_desc, axis=1, keepdims=True)
    miner = HardNegativeMiner(db_utm, q_utm, 10.0, 25.0, num_sampled=1000, num_negatives=10, margin=0.1)
    dist = np.linalg.norm(db_utm[None] - q_utm[:, None], axis=2)
    checked = 0
    for q in range(40):
        t = miner.mine(q, q_desc[q], db_desc)
        pos = np.flatnonzero(dist[q] <= 10.0)
        if len(pos) == 0:
            assert t is None and q not in miner.trainable_queries
            continue
        d2 = ((db_desc - q_desc[q]) ** 2).sum(1)
        best = pos[np.argmin(d2[pos])]
        negs = np.flatnonzero(dist[q] > 25.0)
        violating = negs[d2[negs] < d2[best] + 0.1]
        expected = violating[np.argsort(d2[violating])][:10]
        if len(expected) == 0:
            assert t is None
            continue
        assert t.positive == best and dist[q, t.positive] <= 10.0
        assert np.all(dist[q, t.negatives] > 25.0)
        np.testing.assert_array_equal(t.negatives, expected)  # all negatives sampled: exact hardest
        checked += 1
    assert checked >= 10


def test_mining_sample_and_cache():
    rng = np.random.default_rng(4)
    db_utm = np.stack([np.arange(500) * 3.0, np.zeros(500)], 1)
    q_utm = np.array([[1.0, 0.0]])
    db_desc = rng.normal(size=(500, 8)).astype(np.float32)
    q_desc = db_desc[0] + 0.5 * rng.normal(size=8).astype(np.float32)
    miner = HardNegativeMiner(
        db_utm, q_utm, 10.0, 25.0, num_sampled=50, num_negatives=5, margin=100.0, seed=1
    )
    first = miner.mine(0, q_desc, db_desc)
    assert len(first.sampled) == 50 and np.all(db_utm[first.sampled, 0] > 25.0)
    second = miner.mine(0, q_desc, db_desc)
    assert set(first.negatives) <= set(second.sampled)  # previous hardest are always reconsidered
    d2 = ((db_desc[second.sampled] - q_desc) ** 2).sum(1)
    np.testing.assert_array_equal(second.negatives, second.sampled[np.argsort(d2)[:5]])
    state = json.loads(json.dumps(miner.state_dict()))
    again = HardNegativeMiner(
        db_utm, q_utm, 10.0, 25.0, num_sampled=50, num_negatives=5, margin=100.0, seed=9
    )
    again.load_state_dict(state)
    np.testing.assert_array_equal(
        again.mine(0, q_desc, db_desc).sampled, miner.mine(0, q_desc, db_desc).sampled
    )


def test_recall_at_n_by_hand():
    db_utm = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]])
    q_utm = np.array([[5.0, 0.0], [195.0, 0.0], [1000.0, 0.0]])
    db = np.eye(3, dtype=np.float32)
    # query 0: nearest descriptor is db 1 (wrong), then db 0 (right) -> hit at N=2
    # query 1: nearest is db 2 (right) -> hit at N=1; query 2: no database image within 25 m
    q = np.array([[0.6, 0.8, 0.0], [0.0, 0.1, 0.99], [1.0, 0.0, 0.0]], np.float32)
    r = recalls_from_descriptors(q, db, q_utm, db_utm, 25.0, (1, 2, 3))
    assert r["recall@1"] == 0.5 and r["recall@2"] == 1.0 and r["recall@3"] == 1.0
    assert r["queries"] == 2 and r["queries_without_positive"] == 1


def test_evaluate_writes_json_png_and_baseline_table(small_model, tmp_path, capsys):
    from netvlad_ros.offline.datasets import dataset_from_arrays

    from support import make_scene

    db = [make_scene(s, 96, 128) for s in range(5)]
    qs = [cv2.GaussianBlur(im, (3, 3), 0) for im in db]
    pos = np.stack([np.arange(5) * 50.0, np.zeros(5)], 1)
    ds = dataset_from_arrays(db, pos, qs, pos + 2.0, "scenes")
    out = evaluate(small_model, ds, tmp_path / "eval", batch_size=4)
    printed = capsys.readouterr().out
    assert "| method |" in printed and "+ gem" in printed and "+ avg" in printed and "+ max" in printed
    assert len(out["results"]) == 4
    data = json.loads((tmp_path / "eval" / "recalls.json").read_text())
    assert set(data["results"]) == set(out["results"])
    for r in data["results"].values():
        assert 0.0 <= r["recall@1"] <= r["recall@5"] <= r["recall@10"] <= r["recall@20"] <= 1.0
        assert r["queries"] == 5
    assert (tmp_path / "eval" / "recall_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_file_and_errors(tmp_path):
    from support import REPO

    cfg = load_config(REPO / "config" / "train.yaml", {"train.epochs": 2})
    assert (
        cfg["train"]["epochs"] == 2
        and cfg["mining"]["margin"] == 0.1
        and cfg["train"]["train_from"] == "last"
    )
    assert cfg["data"]["train"]["format"] == "pittsburgh"
    with pytest.raises(TrainConfigError, match=r"train\.epoch"):
        load_config(None, {"train.epoch": 2})
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  optimizer: rmsprop\n")
    with pytest.raises(TrainConfigError, match="optimizer"):
        load_config(bad)


def test_map_dataset_from_two_maps_in_different_gps_frames(scenes, tmp_path):
    """Database and queries from build-map maps; query positions move into the database's frame."""
    from netvlad_ros.mapdb import EnuFrame, Keyframe, MapDatabase
    from netvlad_ros.offline.build_map import make_thumbnail

    def write(path, origin, xs, scene_ids):
        db = MapDatabase.create(4, "fp")
        db.set_origin(*origin)
        enu = EnuFrame(*origin)
        desc = np.eye(4, dtype=np.float32)[: len(xs)]
        kfs = []
        for i, (x, k) in enumerate(zip(xs, scene_ids, strict=True)):
            lat, lon, alt = (float(np.ravel(v)[0]) for v in enu.to_geodetic(np.array([[x, 0.0, 0.0]])))
            kfs.append(Keyframe(stamp=float(i), position=[x, 0.0, 0.0], latlonalt=(lat, lon, alt),
                                thumbnail=make_thumbnail(scenes[k])))  # fmt: skip
        db.add(kfs, desc)
        db.save(path)

    write(tmp_path / "db", (47.0, 8.0, 400.0), [0.0, 10.0, 20.0], [0, 1, 2])
    write(tmp_path / "q", (47.0, 8.0001, 400.0), [-5.0, 2.6], [3, 4])  # origin ~7.6 m east of the db's
    ds = read_map_dataset(tmp_path / "db", tmp_path / "q")
    assert (ds.num_db, ds.num_queries) == (3, 2)
    np.testing.assert_allclose(ds.db_utm[:, 0], [0.0, 10.0, 20.0])
    east = (8.0001 - 8.0) * np.pi / 180 * 6_378_137 * np.cos(np.radians(47.0))  # 7.6 m
    np.testing.assert_allclose(ds.q_utm[:, 0], [-5.0 + east, 2.6 + east], atol=0.05)
    assert ds.db_image(0).shape[1] == 160  # thumbnails, 160 px wide
