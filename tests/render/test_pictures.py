"""The pictures a person looks at: labelled sample grids, colour bars over depth tiles, and
labels that never overrun their tile or the numbers (`toolkit/render/pictures.py` lays them out)."""

import io

import numpy as np
import pytest
from PIL import Image

from toolkit.deploy.service import render
from toolkit.deploy.stream import compose_panel
from toolkit.render import imageio, pictures
from toolkit.tasks.infer import write_outputs
from toolkit.verify.compare import WorstPair
from train.logging import sample_grid

GAP = 2
LUT_INDEX = {tuple(c): i for i, c in enumerate(imageio.colorize_depth(np.linspace(0, 1, 256)[None])[0].tolist())}


def _scene(h: int, w: int):
    rng = np.random.default_rng(h * w)
    return rng.random((h, w, 3), dtype=np.float32), rng.random((h, w, 3), dtype=np.float32), \
        (rng.random((h, w)) > 0.5).astype(np.float32), rng.random((h, w), dtype=np.float32)


def _cells(panel: np.ndarray, tile: tuple[int, int], columns: int) -> list[np.ndarray]:
    """The label band over each column of a one-row panel of equal (h, w) tiles."""
    band = panel[: panel.shape[0] - tile[0]]
    assert panel.shape[1] == columns * tile[1] + (columns - 1) * GAP
    return [band[:, c * (tile[1] + GAP) : c * (tile[1] + GAP) + tile[1]] for c in range(columns)]


def _has_bar(cell: np.ndarray) -> bool:
    """A row holding a run of magma colours that climbs from far (dark) to near (bright)."""
    for row in cell:
        idx = [LUT_INDEX.get(tuple(p), -1) for p in row.tolist()]
        run = [i for i in idx if i >= 0]
        if len(run) >= 10 and np.all(np.diff(run) >= 0) and run[-1] - run[0] > 200:
            return True
    return False


def test_sample_grid_has_labels_large_tiles_and_depth_in_magma():
    arrays = {k: np.full((2, 3 if k in ("bg", "fgbg") else 1, 32, 32), 0.25, np.float32)
              for k in ("bg", "fgbg", "mask_pred", "mask", "depth_pred", "depth")}
    arrays["bg"] = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    grid = sample_grid(arrays)
    band = grid.shape[0] - 2 * 128 - GAP
    assert grid.shape[1] == 6 * 128 + 5 * GAP and band > 10  # 32 px tiles shown at 128 px, under a label band
    bg = imageio.to_uint8(arrays["bg"][0].transpose(1, 2, 0))
    np.testing.assert_array_equal(grid[band : band + 128, :128], bg.repeat(4, 0).repeat(4, 1))  # pixel for pixel
    for c in range(6):  # every column is labelled
        assert (grid[:band, c * 130 : c * 130 + 128] != pictures.BACKGROUND).any(), c
    depth_tile = grid[band : band + 128, 4 * 130 : 4 * 130 + 128]
    assert (depth_tile == imageio.colorize_depth(np.array([[0.25]]))[0, 0]).all()  # the panels' colour map, not grey


def _infer(tmp_path, h, w):
    bg, fgbg, mask, depth = _scene(h, w)
    write_outputs(tmp_path, bg, fgbg, mask, depth)
    assert Image.open(tmp_path / "depth.png").size == (w, h)  # the data file stays bare, at the input's size
    return np.asarray(Image.open(tmp_path / "panel.png").convert("RGB")), (h, w), 4, [3]


def _stream(tmp_path, h, w):
    _, frame, mask, depth = _scene(h, w)
    return compose_panel(imageio.to_uint8(frame), mask, depth)[0], (h, w), 3, [2]


def _serve(tmp_path, h, w):
    body, _ = render(*_scene(h, w), "panel", [])
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB")), (h, w), 4, [3]


def _worst(tmp_path, h, w):
    bg, fgbg, mask, depth = _scene(h, w)
    pair = WorstPair(0.1, {"bg": bg.transpose(2, 0, 1), "fgbg": fgbg.transpose(2, 0, 1)},
                     {"mask": mask * 0.9, "depth": depth * 0.9}, {"mask": mask, "depth": depth})
    k = -(-128 // h)  # parity enlarges small tiles by a whole factor to at least 128 px
    return pair.panel(), (h * k, w * k), 8, [5, 6]


@pytest.mark.parametrize("make", [_infer, _stream, _serve, _worst])
@pytest.mark.parametrize("size", [(128, 128), (120, 160), (40, 56)])
def test_depth_tiles_carry_a_far_near_colour_bar(tmp_path, make, size):
    panel, tile, columns, depth_columns = make(tmp_path, *size)
    cells = _cells(panel, tile, columns)
    assert [c for c in range(columns) if _has_bar(cells[c]) and c in depth_columns] == depth_columns
    assert not _has_bar(cells[1])  # the fgbg has none


@pytest.mark.parametrize("tile", [(8, 8), (32, 32), (128, 24), (100, 60)])
def test_worst_pair_labels_stay_inside_their_tiles(tile):
    panel, (h, w), columns, _ = _worst(None, *tile)
    assert panel.shape[1] == columns * w + (columns - 1) * GAP  # tiles enlarged to 128 px: room for the numbers
    band = panel[: panel.shape[0] - h]
    for c in range(1, columns):  # the gaps between tiles are bare: no text runs into a neighbour
        x = c * (w + GAP)
        assert (band[:, x - GAP : x] == pictures.BACKGROUND).all(), (tile, c)


@pytest.mark.parametrize("width", [6, 20, 40, 64, 128, 400])
def test_labels_fit_and_legends_keep_off_them(width):
    style_font = pictures.font_for(width)
    for line in pictures.wrap("depth |diff| against the reference", style_font, width - 2 * pictures.PAD):
        assert style_font.getlength(line) <= width - 2 * pictures.PAD
    legend = imageio.magma_legend("0", "4.7e-03")
    with_numbers = pictures.label_band([width], ["mask |diff|"], [legend])
    without = pictures.label_band([width], ["mask |diff|"], [None])
    top = without.shape[0] - pictures.PAD
    np.testing.assert_array_equal(with_numbers[:top], without[:top])  # the legend leaves the label's rows alone
    assert (with_numbers[top:] != pictures.BACKGROUND).any() or width < 10  # and is drawn below them
