import numpy as np
import pytest

from reelserve.micro.dataset import training_samples
from reelserve.micro.evaluate import judge
from reelserve.micro.styles import OUTLINED_AT, _hull, outline_scene, read_style, render_outline
from reelserve.micro.world import MOTIONS, SHAPES, random_scene, render


def _outlined(count: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [outline_scene(s.scene, rng) for s in training_samples(count, seed=seed)]


def test_the_hull_closes_a_ring_with_a_gap_and_leaves_a_convex_shape_alone() -> None:
    ring = np.zeros((1, 12, 12), dtype=bool)
    ring[0, 3:9, 3:9] = True
    ring[0, 5:7, 5:7] = False
    ring[0, 5:7, 3:5] = False  # a gap in the outline: the hull still holds what it outlines
    assert _hull(ring)[0, 3:9, 3:9].all() and _hull(ring).sum() == 36
    diamond = np.abs(np.arange(11)[:, None] - 5) + np.abs(np.arange(11)[None, :] - 5) <= 4
    assert np.array_equal(_hull(diamond[None]), diamond[None])


def test_drawn_outlines_read_as_outlined_and_filled_shapes_do_not() -> None:
    scenes = _outlined(24, seed=3)
    outlined = [read_style(render_outline(scene)) for scene in scenes]
    filled = [read_style(render(s.scene)) for s in training_samples(24, seed=3)]
    assert all(r.outlined for r in outlined)
    assert all(not r.outlined and r.hollowness < OUTLINED_AT / 2 for r in filled)


def test_an_outline_keeps_the_scene_s_colour_motion_and_silhouette_shape() -> None:
    scenes = _outlined(30, seed=4)
    for scene in scenes:
        frames = render_outline(scene)
        verdict, style = judge(frames), read_style(frames)
        assert (verdict.color, verdict.motion, style.shape) == (scene.color, scene.motion, scene.shape)


@pytest.mark.parametrize("motion", MOTIONS)
def test_the_larger_outlined_object_stays_inside_the_frame(motion: str) -> None:
    rng = np.random.default_rng(5)
    for shape in SHAPES:
        for _ in range(20):
            scene = outline_scene(random_scene(rng, shape, "red", motion, "black"), rng)
            frames = render_outline(scene)
            drawn = (frames != frames[0, 0, 0]).any(axis=-1)  # (T, H, W): not the background
            border = np.concatenate([drawn[:, 0], drawn[:, -1], drawn[:, :, 0], drawn[:, :, -1]], axis=1)
            assert drawn.any() and not border.any() and scene.extent >= 24


def test_nothing_to_read_in_an_empty_clip() -> None:
    reading = read_style(np.full((17, 64, 64, 3), 12, dtype=np.uint8))
    assert not reading.outlined and reading.hollowness == 0.0 and reading.shape is None
