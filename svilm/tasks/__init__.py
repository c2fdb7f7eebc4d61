"""The task registry: `config.task` names one of these; `get(name)` returns its Task.

Adding a task is one line here plus its own files (see docs/design.md, "Adding a task").
Modules are imported on first use, so `--help` and config errors stay fast and a task's
dependencies load only when it runs.
"""

from __future__ import annotations

import importlib

from svilm.tasks import base

# name -> "module:class"
_REGISTRY = {
  "action_recognition": "svilm.tasks.action_recognition:ActionRecognitionTask",
  "pretrain": "svilm.tasks.pretrain:PretrainTask",
  "retrieval": "svilm.tasks.retrieval:RetrievalTask",
  "temporal_localization": "svilm.tasks.temporal_localization:TemporalLocalizationTask",
  "video_qa": "svilm.tasks.video_qa:VideoQATask",
}


def names() -> tuple[str, ...]:
  """The registered task names, sorted."""
  return tuple(sorted(_REGISTRY))


def get(name: str) -> base.Task:
  """The Task registered as `name`; an unknown name is a ValueError listing the known ones."""
  if name not in _REGISTRY:
    raise ValueError(
      f"config.task={name!r} is not a registered task; known tasks: {', '.join(names())}"
    )
  module, cls = _REGISTRY[name].split(":")
  task = getattr(importlib.import_module(module), cls)()
  assert task.name == name, (task.name, name)
  return task
