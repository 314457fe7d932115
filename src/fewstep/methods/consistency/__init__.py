"""Consistency distillation: a student that maps any point of the teacher's ODE trajectory to its end
(docs/methods.md sections 2 and 3): CD and LCM (LCM-LoRA with a LoRA student)."""
