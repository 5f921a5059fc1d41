"""Tasks: classification (and two-class anti-spoofing) and semantic segmentation."""

from mmanet.tasks.anti_spoofing import AntiSpoofingTask
from mmanet.tasks.base import Task, build_task, register_task
from mmanet.tasks.classification import ClassificationTask
from mmanet.tasks.segmentation import SegmentationTask

__all__ = [
    "AntiSpoofingTask",
    "ClassificationTask",
    "SegmentationTask",
    "Task",
    "build_task",
    "register_task",
]
