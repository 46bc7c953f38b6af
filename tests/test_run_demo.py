"""The demo line: deterministic under its seed, cheap per frame, and its truth adds up."""

from __future__ import annotations

import itertools
import time

import numpy as np

from edge.demo import BELT_CONTRAST, MISSING_SHARE, DemoLine, belt_contrast


def test_same_seed_same_frames_other_seed_other_line():
    a, b, c = DemoLine(3), DemoLine(3), DemoLine(4)
    for t in (0, 80, 250):
        assert np.array_equal(a.render(t), b.render(t))
    assert a.truth_at(80) == b.truth_at(80)
    assert not np.array_equal(a.render(80), c.render(80))
    # frames do not depend on the order they are asked for
    assert np.array_equal(DemoLine(3).render(250), a.render(250))


def test_the_belt_is_empty_at_first_and_products_cross_one_by_one():
    line = DemoLine(0)
    assert all(line.truth_at(t) is None for t in range(40))
    products = line.products_between(0, 1799)
    assert len(products) >= 25
    assert [p.id for p in products] == list(range(len(products)))
    for before, after in itertools.pairwise(products):
        assert before.last_frame < after.first_frame  # never two products in the region at once
    frame = (products[3].first_frame + products[3].last_frame) // 2
    assert line.truth_at(frame)["product"] == 4  # numbered from 1, as edge-run's product ids
    assert line.truth_at(frame)["expected"] == products[3].expected


def test_a_known_share_of_products_carry_no_stamp():
    products = [p for seed in range(4) for p in DemoLine(seed).products_between(0, 1799)]
    missing = sum(not p.stamp for p in products) / len(products)
    assert abs(missing - MISSING_SHARE) < 0.08
    assert any(p.distractor and not p.stamp for p in products)
    assert any(p.distractor and p.stamp for p in products)


def test_products_are_rendered_once_with_their_stamp_box_and_unlike_the_belt():
    line = DemoLine(1)
    for p in line.products_between(0, 600):
        image, box = line.product_image(p.id)
        assert (box is not None) == p.stamp
        assert belt_contrast(image) >= BELT_CONTRAST
        if box is not None:
            h, w = image.shape[:2]
            assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h


def test_a_frame_is_cheap_once_its_products_are_rendered():
    line = DemoLine(2)
    for t in range(60, 100):
        line.render(t)
    t0 = time.perf_counter()
    for t in range(100, 160):
        frame = line.render(t)
    per_frame = (time.perf_counter() - t0) / 60
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    assert per_frame < 0.02  # a pasted product, not a re-rendered one (about 1 ms here)


def test_a_line_run_for_long_keeps_a_bounded_few_product_layouts_and_the_same_truth():
    """A demo left running for weeks kept every product's layout (0.5 KB each, a soak's finding);
    those that left the view are dropped, and the run's truth at its end is drawn afresh."""
    line, fresh = DemoLine(4), DemoLine(4)
    sizes = []
    for t in range(0, 40_000, 5):  # about 600 products pass
        line.truth_at(t)
        sizes.append(len(line._layouts))
    assert max(sizes) <= 40 and line._first_kept > 500
    crossed = line.products_between(20_000, 39_000)
    assert crossed == fresh.products_between(20_000, 39_000) and len(crossed) > 250
    assert line.truth_at(39_000) == fresh.truth_at(39_000)
