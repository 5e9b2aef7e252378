"""How a stage runs (one process or several: ``launch``, ``distributed``; device, seeding) and ends on a
user's error (``errors``). Every package may use it; it uses none of them."""
