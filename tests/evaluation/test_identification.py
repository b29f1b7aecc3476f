"""The learning benchmark's identification criterion: nearest-gallery identification, chance and its tests, the
held-out split, and the fixed metrics on real faces (dlib's descriptor at known landmarks)."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import sys

import numpy as np
import pytest

from comfyui_facesnap.evaluation.identification import (
    DlibDescriptor,
    binomial_p_value,
    identification_summary,
    identify,
    mean_colour_in_landmarks,
    relabelling_p_value,
    wilson_interval,
)

BENCHMARK = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "learning_evidence.py"


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("benchmark_learning_evidence", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_identify_picks_the_smallest_mean_distance_to_each_gallery():
    gallery = np.array([[0.0, 0.0], [0.0, 2.0], [5.0, 0.0], [5.0, 0.4]])
    labels = ["a", "a", "b", "b"]
    # (2.4, 0): the nearest single item is a's (0, 0), but the mean distances are a 2.76, b 2.62
    assert identify([[2.4, 0.0], [0.0, 1.0], [6.0, 0.0]], gallery, labels) == ["b", "a", "b"]


def test_leave_one_out_never_compares_an_item_with_itself():
    # the two a-items are far apart: counting its zero distance to itself is what makes (0) an a
    gallery = np.array([[0.0], [9.0], [4.0], [6.0]])
    labels = ["a", "a", "b", "b"]
    assert identify(gallery, gallery, labels) == ["a", "b", "b", "b"]
    assert identify(gallery, gallery, labels, leave_one_out=True) == ["b", "b", "b", "b"]
    with pytest.raises(ValueError):
        identify(gallery[:3], gallery, labels, leave_one_out=True)


def test_binomial_p_value_matches_closed_forms():
    assert binomial_p_value(0, 10, 0.25) == pytest.approx(1.0)
    assert binomial_p_value(10, 10, 0.25) == pytest.approx(0.25**10)
    assert binomial_p_value(3, 4, 0.5) == pytest.approx(5 / 16)
    # 32 of 64 with chance 1/4 is far beyond luck; 16 of 64 is exactly chance
    assert binomial_p_value(32, 64, 0.25) < 1e-4 < binomial_p_value(16, 64, 0.25)
    with pytest.raises(ValueError):
        binomial_p_value(5, 4, 0.5)


def test_wilson_interval_contains_the_proportion_and_narrows_with_n():
    low, high = wilson_interval(16, 64)
    assert low < 0.25 < high
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0) and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    small, large = wilson_interval(5, 20), wilson_interval(50, 200)
    assert small[1] - small[0] > large[1] - large[0]
    # a textbook value: 8 of 10 -> [0.490, 0.943]
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-3)


def test_relabelling_test_counts_assignments_at_least_as_good():
    names = ["a", "b", "c"]
    truth = ["a", "a", "b", "b", "c", "c"]
    assert relabelling_p_value(truth, truth, names) == pytest.approx(1 / math.factorial(3))
    # the same output for everyone: every assignment scores alike
    assert relabelling_p_value(truth, ["a"] * 6, names) == 1.0


def test_summary_reports_chance_and_only_calls_real_identification_above_chance():
    names = ["p0", "p1", "p2", "p3"]
    truth = [n for n in names for _ in range(16)]
    perfect = identification_summary(truth, truth, names)
    assert perfect["accuracy"] == 1.0 and perfect["chance"] == 0.25 and perfect["samples"] == 64
    assert perfect["above_chance"] and perfect["p_relabelling"] == pytest.approx(1 / 24, abs=1e-4)
    # ignores the identity input: one output per seed, so exactly one person in four is "right"
    constant = identification_summary(truth, [names[i % 4] for i in range(64)], names)
    assert constant["accuracy"] == 0.25 and not constant["above_chance"]
    # right for one person, wrong for the rest: accuracy at chance, not above it
    one = identification_summary(truth, ["p0"] * 64, names)
    assert one["per_identity"] == {"p0": 1.0, "p1": 0.0, "p2": 0.0, "p3": 0.0} and not one["above_chance"]


def test_mean_colour_reads_only_inside_the_landmark_hull():
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = (255, 0, 0)
    square = np.array([[20, 20], [44, 20], [44, 44], [20, 44]] * 17, np.float64)[:68]
    assert mean_colour_in_landmarks(image, square) == pytest.approx([1.0, 0.0, 0.0])


def test_split_held_out_shares_no_crop(learning, tmp_path):
    from comfyui_facesnap.devkit.synthetic_shards import write_synthetic_shards
    from comfyui_facesnap.training.shards import index_shard, list_shards, read_sample

    write_synthetic_shards(tmp_path / "all", identities=3, per_identity=5, caption="a photo of a person")
    counts = learning.split_held_out(tmp_path / "all", tmp_path / "train", tmp_path / "held", 3)
    assert counts == {"train": {"id0": 3, "id1": 3, "id2": 3}, "held_out": {"id0": 2, "id1": 2, "id2": 2}}

    def samples(root):
        return [read_sample(r, {"json", "image.jpg"}) for s in list_shards(root) for r in index_shard(s)]

    train, held = samples(tmp_path / "train"), samples(tmp_path / "held")
    assert not {s["__key__"] for s in train} & {s["__key__"] for s in held}
    assert not {s["image.jpg"].tobytes() for s in train} & {s["image.jpg"].tobytes() for s in held}
    assert json.dumps(sorted(s["json"]["identity"] for s in held)) == json.dumps(["id0", "id0", "id1", "id1", "id2",
                                                                                  "id2"])


@pytest.mark.slow
def test_dlib_descriptor_at_known_landmarks_identifies_held_out_t1_crops_at_64px(learning, tmp_path):
    """The metric's ceiling on real faces: held-out 64² crops of t1.jpg's people, each identified among the others
    with the descriptor computed at their stored landmarks (no detector)."""
    pytest.importorskip("dlib")
    learning.prepare_photos(learning.EVALUATED_PHOTOS, tmp_path / "all", 4, "", tmp_path, False)
    crops = learning.crops_at(tmp_path / "all", 64)
    descriptor = DlibDescriptor()
    features = np.stack([descriptor(c["rgb"], c["landmarks"]) for c in crops])
    labels = [c["identity"] for c in crops]
    assert identify(features, features, labels, leave_one_out=True) == labels
    # a blank image at the same landmarks is a face to no one in particular: it still gets a descriptor
    assert descriptor(np.full((64, 64, 3), 128, np.uint8), crops[0]["landmarks"]).shape == (128,)
