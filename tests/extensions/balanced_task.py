"""A task of one's own: classification ranked by its balanced error."""

from typing import ClassVar

from mmanet.tasks import ClassificationTask, register_task


@register_task("balanced_classification")
class BalancedClassification(ClassificationTask):
    """100 − the mean per-class recall (%), besides error and accuracy."""

    name = "balanced_classification"
    # each metric with its better side: "min" (lower is better) or "max"
    metrics: ClassVar[dict[str, str]] = {"balanced_error": "min", "error": "min"}
    default_metric = "balanced_error"
    demo_config = None

    def metrics_from_confusion(self, confusion):
        recall = confusion.diag().double() / confusion.sum(dim=1).double().clamp_min(1)
        balanced = 100.0 * (1.0 - float(recall.mean()))
        return {**super().metrics_from_confusion(confusion), "balanced_error": balanced}
