"""Inference runtimes: ONNX Runtime / OpenVINO agree with PyTorch, cached exports, fallbacks.

Everything runs the real runtimes on the real small model (``small_model``): no mocks.
Margins are measured values (written beside each assertion). Tests that corrupt the
export cache use a cache of their own (``NETVLAD_ROS_CACHE`` set to a temp dir per test);
the rest share the session's temp cache that test/conftest.py sets up.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from netvlad_ros.config import ConfigError, specs
from netvlad_ros.fileio import sha256_file
from netvlad_ros.mapdb import Keyframe, MapDatabase
from netvlad_ros.model import DescriptorExtractor, DeviceError, ExtractorParams, load_model
from netvlad_ros.model import runtimes as rt
from netvlad_ros.model.default_model import cache_dir

EXPORTED = [n for n in ("onnxruntime", "openvino") if rt.runtime_version(n) is not None]
needs_exported = pytest.mark.skipif(not EXPORTED, reason="neither onnxruntime nor openvino is installed")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty export cache for this test only."""
    path = tmp_path / "cache"
    monkeypatch.setenv("NETVLAD_ROS_CACHE", str(path))
    return path


def _exports(cache: Path) -> list[Path]:
    return sorted((cache / "exports").glob("*.onnx"))


@pytest.fixture(scope="module")
def torch_ex(small_model):
    return DescriptorExtractor(small_model, device="cpu", runtime="torch")


@pytest.fixture(scope="module", params=EXPORTED)
def runtime_ex(request, small_model):
    ex = DescriptorExtractor(small_model, device="cpu", runtime=request.param, batch_size=4)
    assert ex.runtime == request.param, ex.runtime_note
    return ex


def _sized(scenes):
    """Images whose network inputs have four different shapes (card max_side 320)."""
    return [
        scenes[0],  # 320x240 -> 320x240
        cv2.resize(scenes[1], (200, 300)),  # tall -> 213x320
        cv2.resize(scenes[2], (391, 257)),  # odd -> 320x210
        cv2.resize(scenes[3], (640, 480)),  # 4:3 again, downscaled -> 320x240
        cv2.resize(scenes[4], (333, 101)),  # wide -> 320x97
    ]


def test_the_session_cache_is_not_the_users():
    home = Path.home() / ".cache" / "netvlad_ros"
    assert cache_dir().resolve() != home.resolve()
    assert "NETVLAD_ROS_CACHE" in os.environ


@needs_exported
def test_runtime_descriptors_match_pytorch_at_several_sizes(runtime_ex, torch_ex, scenes):
    images = _sized(scenes)
    shapes = {x.shape for x in runtime_ex.prepare(images).inputs}
    assert len(shapes) == 4  # the same extractor, four input sizes, no re-export
    for max_side in (0, 160):  # and another size again through the max_side option
        runtime_ex.max_side = max_side
        torch_ex.max_side = max_side
        got, want = runtime_ex(images), torch_ex(images)
        # measured: min cosine 0.99999994 (float32 rounding of 1) for both runtimes
        assert _cos(got, want).min() > 0.999999
        assert np.abs(got - want).max() < 1e-5  # measured <= 3.5e-7 (both runtimes, both sizes)
    runtime_ex.max_side = torch_ex.max_side = 0
    # The construction-time check's own number (measured 1 - 1e-12).
    assert runtime_ex.runtime_cosine > 0.999999


@needs_exported
def test_map_built_with_one_runtime_is_queried_with_another(small_model, scenes, torch_ex):
    """Same fingerprint whatever runs the network, and the same keyframes come back."""
    builders = {name: DescriptorExtractor(small_model, device="cpu", runtime=name) for name in EXPORTED}
    builders["torch"] = torch_ex
    assert len({ex.fingerprint for ex in builders.values()}) == 1
    # Queries: the map's places seen again, shifted 12 px and darkened (a revisit).
    queries = [cv2.convertScaleAbs(np.roll(s, 12, axis=1), alpha=0.85, beta=-5) for s in scenes]
    mapped = {name: ex(scenes) for name, ex in builders.items()}
    asked = {name: ex(queries) for name, ex in builders.items()}
    results = {}
    for build_name, build_ex in builders.items():
        db = MapDatabase.create(build_ex.dim, build_ex.fingerprint)
        ids = db.add([Keyframe(stamp=float(i)) for i in range(len(scenes))], mapped[build_name])
        for query_name in builders:
            res = db.search(asked[query_name], k=3)
            results[build_name, query_name] = (ids, res.ids, res.scores)
    ids, top, _ = results["torch", "torch"]
    # With PyTorch on both sides 12/12 places come back first, top-1 scores 0.83-0.88 against
    # 0.20-0.40 for the second (measured), so the test means something.
    assert (top[:, 0] == ids).all()
    for key, (_, other, scores) in results.items():
        assert (other == top).all(), key  # the same top-3 keyframes, in the same order
        assert np.abs(scores - results["torch", "torch"][2]).max() < 1e-5, key  # measured <= 6.2e-7


@needs_exported
def test_export_is_cached_and_reused(own_cache, small_model):
    name = EXPORTED[0]
    first = DescriptorExtractor(small_model, device="cpu", runtime=name)
    assert "exported" in first.runtime_note
    files = _exports(own_cache)
    assert len(files) == 1 and files[0].with_suffix(".json").is_file()
    mtime = files[0].stat().st_mtime_ns
    second = DescriptorExtractor(small_model, device="cpu", runtime=name)
    assert "exported" not in second.runtime_note
    assert _exports(own_cache) == files and files[0].stat().st_mtime_ns == mtime
    meta = json.loads(files[0].with_suffix(".json").read_text())
    assert meta["fingerprint"] == first.fingerprint and meta["torch"] == torch.__version__
    assert not list((own_cache / "exports").glob(".*tmp*"))  # no temp files left behind


@needs_exported
@pytest.mark.parametrize("damage", ["truncate", "garbage", "garbage_with_forged_checksum"])
def test_corrupt_cached_export_is_rebuilt(own_cache, small_model, torch_ex, scenes, damage):
    name = EXPORTED[0]
    DescriptorExtractor(small_model, device="cpu", runtime=name)
    (path,) = _exports(own_cache)
    good = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(good[: len(good) // 3])
    else:
        path.write_bytes(b"\x00garbage" * 1000)
    if damage == "garbage_with_forged_checksum":
        # The checksum passes; the runtime's loader must catch it instead.
        side = path.with_suffix(".json")
        meta = json.loads(side.read_text())
        meta["sha256"] = sha256_file(path)
        side.write_text(json.dumps(meta))
    ex = DescriptorExtractor(small_model, device="cpu", runtime=name)
    assert ex.runtime == name
    assert "re-exported" in ex.runtime_note, ex.runtime_note
    assert rt._cached_ok(path) is None and path.stat().st_size > len(good) // 2  # rebuilt in place
    assert _cos(ex(scenes[:4]), torch_ex(scenes[:4])).min() > 0.999999  # measured 0.99999994


@needs_exported
def test_export_of_another_network_under_the_same_key_fails_the_check_and_is_rebuilt(
    own_cache, small_model, torch_ex, scenes
):
    """A valid ONNX file with a valid checksum, but of different weights: only the check can tell."""
    name = EXPORTED[0]
    DescriptorExtractor(small_model, device="cpu", runtime=name)
    (path,) = _exports(own_cache)
    net, _ = load_model(small_model)
    with torch.no_grad():
        net.pool.centroids.mul_(-1.0)  # a different network with the same architecture
    wrong = own_cache / "wrong.onnx"
    rt._export_file(net, torch.device("cpu"), False, wrong)
    os.replace(wrong, path)
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["sha256"] = sha256_file(path)
    side.write_text(json.dumps(meta))
    ex = DescriptorExtractor(small_model, device="cpu", runtime=name)
    assert ex.runtime == name
    assert "cached export failed" in ex.runtime_note and "cosine" in ex.runtime_note, ex.runtime_note
    assert _cos(ex(scenes[:4]), torch_ex(scenes[:4])).min() > 0.999999  # measured 0.99999994


@needs_exported
def test_failing_check_falls_back_to_pytorch_and_says_so(small_model, torch_ex, scenes, caplog):
    """A threshold no export can meet (cosine is at most 1): the export is refused."""
    name = EXPORTED[0]
    with caplog.at_level(logging.WARNING, logger="netvlad_ros.model.runtimes"):
        ex = DescriptorExtractor(small_model, device="cpu", runtime=name, min_cosine=1.5)
    assert ex.runtime == "torch"
    assert "fell back to PyTorch" in ex.runtime_note and "cosine" in ex.runtime_note
    assert any("running PyTorch instead" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(ex(scenes[:3]), torch_ex(scenes[:3]))  # PyTorch itself, exactly
    auto = DescriptorExtractor(small_model, device="cpu", runtime="auto", min_cosine=1.5)
    assert auto.runtime == "torch"
    assert all(f"runtime {n} refused" in auto.runtime_note for n in EXPORTED), auto.runtime_note


def test_a_runtime_that_is_not_installed(small_model, monkeypatch, torch_ex, scenes):
    """Hidden from import: ``sys.modules[name] = None`` makes ``import name`` fail and
    ``importlib.util.find_spec`` report it missing, exactly as when it is not installed
    (monkeypatch puts the real module back afterwards)."""
    for name in ("openvino", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(rt.RuntimeUnavailableError, match=r"'openvino' was asked for.*pip install openvino"):
        DescriptorExtractor(small_model, device="cpu", runtime="openvino")
    with pytest.raises(rt.RuntimeUnavailableError, match=r"pip install onnxruntime"):
        DescriptorExtractor(small_model, device="cpu", runtime="onnxruntime")
    auto = DescriptorExtractor(small_model, device="cpu", runtime="auto")
    assert auto.runtime == "torch"
    for name in ("openvino", "onnxruntime"):
        assert f"{name} is not installed" in auto.runtime_note
    np.testing.assert_array_equal(auto(scenes[:2]), torch_ex(scenes[:2]))
    monkeypatch.delitem(sys.modules, "onnxruntime")
    if rt.runtime_version("onnxruntime") is not None:  # auto skips only what is missing
        assert DescriptorExtractor(small_model, device="cpu").runtime == "onnxruntime"


def test_unknown_runtime_and_device_errors(small_model):
    with pytest.raises(ConfigError, match="runtime must be one of auto, torch, onnxruntime, openvino"):
        DescriptorExtractor(small_model, device="cpu", runtime="tflite")
    with pytest.raises(ConfigError, match=r"device must be auto, cpu, cuda or cuda:N; got 'gpu0'"):
        DescriptorExtractor(small_model, device="gpu0")
    with pytest.raises(rt.RuntimeUnavailableError, match="tensorrt needs a CUDA device"):
        DescriptorExtractor(small_model, device="cpu", runtime="tensorrt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without CUDA")
def test_gpu_paths_without_a_gpu(small_model):
    for runtime in ("torch", "onnxruntime", "tensorrt"):
        with pytest.raises(DeviceError, match="CUDA is not available here"):
            DescriptorExtractor(small_model, device="cuda", runtime=runtime)
    with pytest.raises(ConfigError, match=r"fp16.*only supported on CUDA"):
        DescriptorExtractor(small_model, device="cpu", fp16=True)
    ex = DescriptorExtractor(small_model, device="auto", runtime="torch")
    assert ex.device.type == "cpu"


@pytest.mark.skipif(rt.runtime_version("onnxruntime") is None, reason="onnxruntime is not installed")
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only onnxruntime wheel's message")
def test_onnxruntime_without_its_cuda_provider_says_which_package(small_model):
    """The CPU wheel has no CUDA / TensorRT provider: a clear error, not a silent CPU session."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    net, card = load_model(small_model)
    path, _ = rt.exported_onnx(net, card.fingerprint(), "small", cache_dir())
    for provider, hint in (("cuda", "onnxruntime-gpu"), ("tensorrt", "TensorRT")):
        with pytest.raises(rt.RuntimeUnavailableError, match=f"no .*ExecutionProvider.*{hint}"):
            rt.OnnxRuntimeBackend(path, torch.device("cuda"), 2, provider)


@needs_exported
def test_prepare_and_run_are_separable_and_timed(runtime_ex, scenes):
    batch = runtime_ex.prepare(scenes[:3])
    assert len(batch) == 3 and batch.network_ms == 0.0 and batch.preprocess_ms > 0
    out = runtime_ex.run(batch)
    assert batch.network_ms > 0 and runtime_ex.last_timing == batch.timing()
    assert batch.timing().images == 3
    np.testing.assert_allclose(out, runtime_ex(scenes[:3]), atol=1e-6)


@pytest.mark.skipif(rt.runtime_version("openvino") is None, reason="openvino is not installed")
def test_warm_up_compiles_the_size_a_camera_will_send(small_model, scenes):
    ex = DescriptorExtractor(small_model, device="cpu", runtime="openvino")
    before = set(ex._backend._compiled)
    ex.warm_up(240, 320)
    assert set(ex._backend._compiled) - before == {(1, 3, 240, 320)} and ex.last_timing is None
    ex(scenes[:1])  # a 320x240 scene: the compiled model is reused, no new one
    assert set(ex._backend._compiled) - before == {(1, 3, 240, 320)}


@needs_exported
def test_prepare_in_threads_while_run_runs(runtime_ex, scenes):
    """The pipelined node's pattern: preprocessing of the next frames overlaps the network."""
    want = runtime_ex(scenes[:8])
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            got[i] = runtime_ex.run(runtime_ex.prepare([scenes[i]]))[0]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_allclose(np.stack([got[i] for i in range(8)]), want, atol=1e-5)


@needs_exported
def test_threads_parameter_reaches_the_runtime(small_model):
    if "onnxruntime" in EXPORTED:
        ex = DescriptorExtractor(small_model, device="cpu", runtime="onnxruntime", threads=1)
        assert ex._backend.session.get_session_options().intra_op_num_threads == 1
    if "openvino" in EXPORTED:
        ex = DescriptorExtractor(small_model, device="cpu", runtime="openvino", threads=1)
        compiled = ex._backend.core.compile_model(ex._backend.model, "CPU", ex._backend.config)
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_max_side_sets_the_network_input_size(small_model, scenes):
    ex = DescriptorExtractor(small_model, device="cpu", runtime="torch", max_side=160)
    assert ex.prepare([scenes[0]]).inputs[0].shape == (3, 120, 160)  # 320x240 scene, longer side 160
    small = ex([scenes[0]])
    ex.max_side = 0  # back to the card's 320
    assert ex.max_side == 320 and ex.prepare([scenes[0]]).inputs[0].shape == (3, 240, 320)
    assert _cos(small, ex([scenes[0]]))[0] < 0.9  # a real change of input (measured 0.33)
    with pytest.raises(ConfigError, match="max_side must be 0"):
        ex.max_side = 8
    with pytest.raises(ConfigError, match="max_side must be 0"):
        DescriptorExtractor(small_model, device="cpu", max_side=4)


def test_params_declare_the_node_and_cli_vocabulary(small_model):
    by_name = {s.name: s for s in specs(ExtractorParams)}
    assert list(by_name) == ["device", "runtime", "fp16", "threads", "max_side", "batch_size"]
    assert by_name["runtime"].choices == rt.RUNTIMES
    assert all(by_name[n].read_only for n in ("device", "runtime", "fp16", "threads"))
    assert not by_name["max_side"].read_only and not by_name["batch_size"].read_only
    ex = DescriptorExtractor(small_model, ExtractorParams(device="cpu", runtime="torch", batch_size=3))
    assert ex.batch_size == 3 and ex.runtime == "torch"
    assert DescriptorExtractor(small_model, device="cpu", runtime="torch", batch_size=None).batch_size == 1
    with pytest.raises(TypeError, match="unknown extractor options: colour"):
        DescriptorExtractor(small_model, colour="rgb")
    with pytest.raises(TypeError, match="params must be an ExtractorParams"):
        DescriptorExtractor(small_model, "cpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"threads must be in \[0, 1024\]"):
        ExtractorParams(threads=-1).validate()


def test_from_network_runs_pytorch_by_default(small_model):
    """An in-memory network may be training: its current weights, not a snapshot."""
    net, card = load_model(small_model)
    ex = DescriptorExtractor.from_network(net, card, device="cpu")
    assert ex.runtime == "torch"


@needs_exported
def test_two_processes_exporting_at_once_share_one_file(own_cache, small_model):
    code = (
        "import sys; from netvlad_ros.model import DescriptorExtractor as D; "
        f"ex = D(sys.argv[1], device='cpu', runtime={EXPORTED[0]!r}); print(ex.runtime)"
    )
    env = {**os.environ, "NETVLAD_ROS_CACHE": str(own_cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(small_model)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert [o[0].split()[-1] for o in outs] == [EXPORTED[0]] * 2
    files = _exports(own_cache)
    assert len(files) == 1 and rt._cached_ok(files[0]) is None
    assert not list((own_cache / "exports").glob(".*tmp*"))


def test_cli_options_are_the_params():
    """describe / build-map / eval-map take the same names as the node's parameters."""
    import argparse

    from netvlad_ros.offline.build_map import add_model_arguments, extractor_params_from_args

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    argv = ["--device", "cpu", "--runtime", "onnxruntime", "--max-side", "320", "--threads", "1"]
    params = extractor_params_from_args(parser.parse_args(argv))
    assert params == ExtractorParams(device="cpu", runtime="onnxruntime", max_side=320, threads=1)
    assert extractor_params_from_args(parser.parse_args([])) == ExtractorParams()
    with pytest.raises(ConfigError, match="device must be"):
        extractor_params_from_args(parser.parse_args(["--device", "gpu"]))
    with pytest.raises(SystemExit):  # argparse refuses a runtime outside the choices
        parser.parse_args(["--runtime", "tflite"])
