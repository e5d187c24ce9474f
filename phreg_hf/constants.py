"""File names shared by the trainer (which writes them), the evaluator and the model card (which read them)."""

# Written by the trainer into --output_dir: the settings of the run (see trainer.DistillTrainer.save_outputs).
TRAINING_SETTINGS_FILE = "phreg_training.json"
# Written by the trainer (held-out measurement at the end of training) and by `phreg eval --out`.
# Schema: {"num_images": int, "resolution": int, "images": str, "rows": {"base"|"teacher"|"student": {metric: float}}}
METRICS_FILE = "phreg_metrics.json"
# Optional before/after pictures from `phreg visualize`, uploaded with the model card when present.
PREVIEWS_DIR = "previews"
