"""Distribution-matching distillation: a fake score tracks the student's distribution and the student
follows the difference between the fake and the real (teacher) score (docs/methods.md section 1)."""
