"""`--queries`: parsing, what `auto` means, generated images on lines, seeded mixing."""

import numpy as np
import pytest

from ec.queries import load_dataset
from ec.queries import mix
from ec.queries.mix import line_images, parse_queries, query_mix, resolve_auto


def test_parse_queries_reads_sources_and_counts():
    assert parse_queries("mnist:4000, lines:16000") == [("mnist", 4000), ("lines", 16000)]
    assert parse_queries("fashion") == [("fashion", None)]
    assert parse_queries("auto") == [("auto", None)]


@pytest.mark.parametrize("text, message", [
    ("", "is empty"), ("svhn:10", "'svhn:10'"), ("mnist:-3", "'mnist:-3'"), ("mnist:0", "COUNT must be >= 1"),
    ("mnist,mnist:5", "named twice"), ("auto,lines:5", "'auto' stands alone"),
    ("mnist,lines", "'lines' needs a count"), ("lines:100", "add one"),
])
def test_parse_queries_refuses_what_it_cannot_do(text, message):
    with pytest.raises(ValueError, match=message):
        parse_queries(text)


def test_auto_is_the_dataset_then_lines():
    assert resolve_auto("mnist", 10000) == [("mnist", 10000), ("lines", None)]
    assert resolve_auto("fashion", 0) == [("fashion", None), ("lines", None)]


def test_lines_go_through_and_beyond_pairs_of_images():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 3))
    out = line_images(images, 2000, np.random.default_rng(1), noise=0.0)
    # every generated image lies on the line through the two images (or is one of them)
    direction = images[1] - images[0]
    offsets = out - images[0]
    cross = offsets - np.outer(offsets @ direction / (direction @ direction), direction)
    assert np.abs(cross).max() < 1e-12
    t = offsets @ direction / (direction @ direction)
    assert t.min() < -0.4 and t.max() > 1.4  # beyond both ends, not only between them
    noisy = line_images(images, 2000, np.random.default_rng(1))
    assert np.std(noisy - out) == pytest.approx(mix.LINE_NOISE, rel=0.05)


def test_query_mix_is_seeded_and_says_what_it_holds():
    digits = load_dataset("digits")
    items = parse_queries("digits:300,lines:200")
    a, b = query_mix(items, digits, seed=4), query_mix(items, digits, seed=4)
    assert a.X.shape == (500, 64) and np.array_equal(a.X, b.X)
    assert a.spec == "digits:300,lines:200" and "300 digits images" in a.describe()
    assert not np.array_equal(query_mix(items, digits, seed=5).X, a.X)
    auto = query_mix([("digits", 100), ("lines", None)], digits, seed=0)
    assert len(auto.X) == mix.AUTO_TOTAL and auto.parts[1] == ("lines", mix.AUTO_TOTAL - 100, auto.parts[1][2])
    with pytest.raises(ValueError, match="'mnist' has 784 inputs per image, the 'digits' teacher takes 64"):
        query_mix(parse_queries("mnist:10"), digits, seed=0)
