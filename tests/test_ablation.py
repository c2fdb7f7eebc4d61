"""The loss ablation command (svilm/ablation.py): its verdicts and page by hand, and its tiny
variant end to end (one row, one seed, a separate process), resumed by a rerun that runs
nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from svilm import ablation
from tests.conftest import REPO_ROOT


def test_verdicts_and_page_by_hand():
  # all: mean 0.5, sd 0.1; contrast: mean 0.2, sd 0.1 -> margin 0.3 / sqrt(0.02) = 2.12.
  assert ablation.verdict([0.4, 0.5, 0.6], [0.1, 0.2, 0.3]) == (
    "reproduced",
    pytest.approx(2.1213, 1e-3),
  )
  state, margin = ablation.verdict([0.4, 0.5, 0.6], [0.3, 0.4, 0.5])  # 0.1 / 0.1414 = 0.71
  assert state == "same direction, within noise" and margin == pytest.approx(0.7071, 1e-3)
  assert ablation.verdict([0.1, 0.2], [0.3, 0.4])[0] == "not reproduced"
  assert ablation.verdict([0.5], [0.1, 0.2]) == ("not enough seeds", None)
  empty = {"grounding/pointing_acc": [], "temporal_grouping/accuracy": []}
  results = {
    "contrast": {"retrieval/t2v_R@1": [0.1, 0.2, 0.3], **empty},
    "all": {"retrieval/t2v_R@1": [0.4, 0.5, 0.6], **empty},
  }
  page = ablation.markdown(results, ["contrast", "all"], 3, ["zero_shot"], "")
  assert "| L_contrast | 0.200 ± 0.100 |  |  |" in page
  assert "| paper, L_contrast (VideoCC, their benchmarks) | 22.7 |  |  |" in page
  assert (
    "| all three losses vs L_contrast alone | **reproduced**, +2.1 sd | not enough seeds" in page
  )
  assert "| the paper (VideoCC, their benchmarks) | 22.7 -> 24.7 |  |  |" in page
  # A change that should not matter: unchanged while |margin| < 2 (0.1 / 0.1414 = 0.71), and
  # a control row's tasks outside its purpose are marked, not left looking unfinished.
  assert ablation.verdict([0.4, 0.5, 0.6], [0.5, 0.6, 0.7], "same")[0] == "unchanged within noise"
  assert ablation.verdict([0.4, 0.5, 0.6], [0.1, 0.2, 0.3], "same")[0] == "changed"
  results["all_paper_negatives"] = {
    "retrieval/t2v_R@1": [0.3, 0.4],
    **empty,
    "video_qa/accuracy": [],
  }
  results["all"]["video_qa/accuracy"] = [0.5]
  page = ablation.markdown(
    results, ["all", "all_paper_negatives"], 3, ["zero_shot", "video_qa"], ""
  )
  assert "| + L_g + L_t, L_g keeping the false negatives | 0.350 ± 0.071 |  |  | not run |" in page
  assert (
    "| L_g without its false negatives vs with them | **same direction, within noise**, +1.2 sd"
    in page
  )


def test_tiny_ablation_runs_once_and_resumes(shapesworld_cache, tmp_path):
  argv = [
    sys.executable,
    "-m",
    "svilm.ablation",
    f"--workdir={tmp_path / 'runs'}",
    "--variant=tiny",
    "--seeds=1",
    "--rows=contrast",
    "--tasks=zero_shot",
    f"--output={tmp_path / 'ablation.md'}",
    f"--extra=--config.data.shapesworld_dir={shapesworld_cache}",
  ]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  first = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
  assert first.returncode == 0, first.stderr[-3000:]
  assert first.stdout.count("svilm.main") == 1  # one pretraining process
  page = (tmp_path / "ablation.md").read_text()
  assert "| L_contrast | " in page and page.count("(1 seed)") == 3  # the 3 zero-shot metrics
  assert "| paper, L_contrast (VideoCC, their benchmarks) | 22.7 |" in page
  # The contrast-only run really turned the other losses and cut-and-paste off.
  config = (tmp_path / "runs" / "contrast" / "seed0" / "pretrain" / "config.json").read_text()
  assert '"enabled": false' in config and '"grounding_weight": 0' in config
  again = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
  assert again.returncode == 0 and "svilm.main" not in again.stdout  # all done: nothing reruns
  assert (tmp_path / "ablation.md").read_text() == page
