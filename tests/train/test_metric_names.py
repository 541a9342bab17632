"""The depth figures a run shows are RMSE, AbsRel and delta1; the IoU of "depth above 0.5" is kept
under a name that says so, and an earlier run's `val_depth_iou` is read as it on resume."""

from __future__ import annotations

import csv

from toolkit.net.checkpoint import load_checkpoint, save_checkpoint
from train import loop
from train.curves import PANELS
from train.logging import write_metrics_csv

ROW = {"epoch": 1, "step": 3, "lr": 0.01, "train_loss": 1.0, "val_loss": 1.1, "val_seed_depth_iou": 0.2,
       "val_depth_above_half_iou": 1.0, "val_depth_mae": 0.05, "val_depth_delta1": 0.6, "val_depth_absrel": 0.3,
       "val_depth_rmse": 0.09, "val_mask_dice": 0.4, "val_mask_iou": 0.3}


def test_rmse_absrel_and_delta1_lead_the_line_the_table_and_the_curves(tmp_path):
    line = loop._summary(ROW)
    assert line.index("val_depth_rmse") < line.index("val_depth_absrel") < line.index("val_depth_delta1")
    assert "iou" not in line.split("val_mask_dice")[1]  # no depth IoU on the progress line
    header = write_metrics_csv(tmp_path / "m.csv", [ROW]).read_text().splitlines()[0].split(",")
    assert header[:13] == ["epoch", "step", "lr", "train_loss", "val_loss", "val_mask_iou", "val_mask_dice",
                           "val_depth_rmse", "val_depth_absrel", "val_depth_delta1", "val_depth_mae",
                           "val_seed_depth_iou", "val_depth_above_half_iou"]
    assert dict(PANELS)["depth"] == ("val_depth_rmse", "val_depth_absrel", "val_depth_delta1")


def test_an_earlier_runs_depth_iou_column_resumes_under_its_new_name(tiny_data, tmp_path, small_config):
    run = tmp_path / "run"
    loop.run(small_config(tiny_data, run, max_steps=1), progress=False)
    ckpt = load_checkpoint(run / "last.pt")
    row = ckpt["training"]["history"][0]
    assert "val_depth_iou" not in row
    row["val_depth_iou"] = row.pop("val_depth_above_half_iou")  # as a checkpoint written before the rename
    del ckpt["training"]["schedule"]
    save_checkpoint(run / "last.pt", ckpt)

    result = loop.run(small_config(tiny_data, None, max_steps=2, resume=run), progress=False)
    assert result.steps == 2 and all("val_depth_iou" not in r for r in result.history)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2 and "val_depth_iou" not in rows[0]
    assert all(r["val_depth_above_half_iou"] != "" for r in rows)
