"""The fitting-frame sampler: lazy, deterministic, and spread over scenes and conditions."""

from __future__ import annotations

import itertools
import types

import numpy as np
import pytest

from netvlad_ros.synthetic.sampler import fitting_frames

KW = {"width": 96, "height": 72, "frames_per_condition": 2}


def test_fitting_frames_are_lazy_and_deterministic() -> None:
    gen = fitting_frames(10**6, seeds=(101,), **KW)  # a million frames: only what is taken is rendered
    assert isinstance(gen, types.GeneratorType)
    first = list(itertools.islice(gen, 4))
    again = list(itertools.islice(fitting_frames(10**6, seeds=(101,), **KW), 4))
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.position, b.position)
        assert a.condition == b.condition
    assert first[0].image.shape == (72, 96, 3)


def test_fitting_frames_mix_scenes_and_conditions() -> None:
    seeds = (11, 12, 13, 14)
    frames = list(fitting_frames(32, seeds=seeds, indoor_fraction=0.5, **KW))
    assert len(frames) == 32
    scenes = {f.scene for f in frames}
    assert scenes == {"street", "corridor"}  # seeds 11-14 at 0.5: measured 2 street, 2 corridor worlds
    labels = {f.condition.label for f in frames if f.condition is not None}
    assert (
        len(labels) >= 6
    )  # measured 9 distinct conditions in 16 runs of 2 frames (indoors: time of day only)
    times = {f.condition.time_of_day for f in frames if f.condition is not None}
    assert len(times) >= 2
    for f in frames:
        assert f.condition is not None
        if f.condition.weather == "snow" and f.scene == "street":
            assert f.condition.season == "winter"
    # consecutive runs start at different places on the route
    starts = {tuple(np.round(f.position[:2])) for f in frames[::2]}
    assert len(starts) == 16


def test_fitting_frames_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="seeds"):
        list(fitting_frames(2, seeds=()))
    with pytest.raises(ValueError, match="indoor_fraction"):
        list(fitting_frames(2, indoor_fraction=1.5))
    assert list(fitting_frames(0, seeds=(1,))) == []
