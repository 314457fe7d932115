"""Students that follow or shortcut the teacher's ODE trajectory (docs/methods.md sections 4 and 8):
progressive distillation, reflow and InstaFlow, guidance distillation."""
