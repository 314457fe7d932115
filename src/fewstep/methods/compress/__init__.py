"""Architecture distillation: students smaller than their teacher (docs/methods.md section 11)."""
