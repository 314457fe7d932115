"""Students that follow or shortcut the teacher's ODE trajectory (METHODS.md sections 2, 3, 4, 8)."""
