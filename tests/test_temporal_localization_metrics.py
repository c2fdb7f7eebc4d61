"""ActivityNet detection mAP against hand-computed cases, and the offline evaluate command."""

import json
import subprocess
import sys

import numpy as np
import pytest

from svilm.evaluators import temporal_localization as tal


def _gt(annotations, subset="validation"):
  """{"database": ...} from {video: [(label, t0, t1)]}."""
  database = {
    video: {
      "subset": subset,
      "annotations": [{"label": label, "segment": [t0, t1]} for label, t0, t1 in entries],
    }
    for video, entries in annotations.items()
  }
  return {"database": database}


def _pred(results):
  """{"results": ...} from {video: [(label, score, t0, t1)]}."""
  return {
    "results": {
      video: [
        {"label": label, "score": score, "segment": [t0, t1]} for label, score, t0, t1 in rows
      ]
      for video, rows in results.items()
    }
  }


def test_tiou():
  np.testing.assert_allclose(
    tal.segment_tiou((0, 10), np.array([[0, 10], [5, 25], [20, 30], [21, 30]])),
    [1.0, 5 / 25, 0.0, 0.0],
  )


def test_duplicates_are_false_positives_and_ap_is_the_interpolated_area():
  ground_truth = _gt({"v1": [("run", 0, 10), ("run", 20, 30)]})
  predictions = _pred(
    {
      "v1": [
        ("run", 0.9, 0, 10),  # tIoU 1 with the first: true positive
        ("run", 0.8, 0, 10),  # its duplicate: false positive
        ("run", 0.7, 21, 30),  # tIoU 0.9 with the second: true positive up to t = 0.9
        ("run", 0.6, 5, 25),  # tIoU 0.2 with both: false positive
      ]
    }
  )
  metrics = tal.detection_metrics(ground_truth, predictions)
  # t <= 0.9: TP FP TP FP -> recall .5 .5 1 1, precision 1 .5 2/3 .5; interpolated precision
  # at the two recall steps: 1 and 2/3 -> AP = .5 * 1 + .5 * 2/3.
  for t in ("0.5", "0.75", "0.9"):
    assert metrics[f"tal/mAP@{t}"] == pytest.approx(0.5 + 0.5 * 2 / 3)
  # t = 0.95: only the first is right -> AP = .5 * 1.
  assert metrics["tal/mAP@0.95"] == pytest.approx(0.5)
  assert metrics["tal/average_mAP"] == pytest.approx((9 * (0.5 + 1 / 3) + 0.5) / 10)
  assert metrics["tal/num_ground_truth"] == 2 and metrics["tal/num_predictions"] == 4


def test_a_prediction_overlapping_two_ground_truths_takes_the_higher_tiou():
  ground_truth = _gt({"v1": [("run", 0, 10), ("run", 1, 11)]})
  predictions = _pred(
    {
      "v1": [
        ("run", 0.9, 1, 10.5),  # tIoU 9/10.5 = 0.857 with [0, 10], 0.95 with [1, 11]
        ("run", 0.8, 0, 10),  # tIoU 1 with [0, 10], 9/11 = 0.818 with [1, 11]
      ]
    }
  )
  metrics = tal.detection_metrics(ground_truth, predictions)
  # The first takes [1, 11] (its higher tIoU), which leaves [0, 10] to the second: both are
  # right at 0.85 too. Matching the first to [0, 10] would leave the second 0.818 < 0.85.
  assert metrics["tal/mAP@0.5"] == pytest.approx(1.0)
  assert metrics["tal/mAP@0.85"] == pytest.approx(1.0)


def test_a_class_without_predictions_scores_zero_and_counts_in_the_mean():
  ground_truth = _gt({"v1": [("run", 0, 10)], "v2": [("jump", 0, 5)]})
  predictions = _pred({"v1": [("run", 0.9, 0, 10)]})
  metrics = tal.detection_metrics(ground_truth, predictions)
  assert metrics["tal/mAP@0.5"] == pytest.approx(0.5)  # run 1, jump 0
  assert metrics["tal/num_classes"] == 2


def test_predictions_on_a_video_without_ground_truth_are_false_positives():
  ground_truth = _gt({"v1": [("run", 0, 10)], "v3": []})
  predictions = _pred(
    {
      "v9": [("run", 0.95, 0, 10)],  # not in the ground truth
      "v3": [("run", 0.92, 0, 10)],  # in it, without annotations
      "v1": [("run", 0.9, 0, 10), ("swim", 0.99, 0, 10)],  # swim: no such class
    }
  )
  metrics = tal.detection_metrics(ground_truth, predictions)
  # FP FP TP -> precision 0 0 1/3 at recall 0 0 1: AP = 1/3.
  assert metrics["tal/mAP@0.5"] == pytest.approx(1 / 3)
  assert metrics["tal/num_unknown_label"] == 1 and metrics["tal/num_videos"] == 2


def test_only_the_subset_is_scored_and_bad_files_are_named():
  ground_truth = _gt({"v1": [("run", 0, 10)]})
  ground_truth["database"]["t1"] = {
    "subset": "testing",
    "annotations": [{"label": "run", "segment": [0, 10]}],
  }
  metrics = tal.detection_metrics(ground_truth, _pred({"v1": [("run", 0.9, 0, 10)]}))
  assert metrics["tal/mAP@0.5"] == 1.0 and metrics["tal/num_ground_truth"] == 1
  with pytest.raises(ValueError, match="subset 'training'"):
    tal.detection_metrics(ground_truth, _pred({}), subset="training")
  with pytest.raises(ValueError, match='no "results"'):
    tal.detection_metrics(ground_truth, {"v1": []})


def test_the_offline_command_prints_one_json_line(tmp_path):
  gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
  gt.write_text(json.dumps(_gt({"v1": [("run", 0, 10)], "v2": [("jump", 0, 5)]})))
  pred.write_text(json.dumps(_pred({"v1": [("run", 0.9, 0, 10)]})))
  command = [sys.executable, "-m", "svilm.evaluate", "temporal_localization"]
  done = subprocess.run(
    command + [f"--ground_truth={gt}", f"--predictions={pred}"],
    capture_output=True,
    text=True,
    check=True,
  )
  (line,) = done.stdout.splitlines()
  assert json.loads(line)["tal/average_mAP"] == pytest.approx(0.5)
  missing = subprocess.run(
    command + [f"--ground_truth={tmp_path / 'nope.json'}", f"--predictions={pred}"],
    capture_output=True,
    text=True,
  )
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines()[-1].startswith("FATAL temporal_localization:")
