"""One module per workflow; each exposes ``SECTIONS`` and ``run(recipe, ctx)``.

Workflows call stage functions (science modules) and write through the run context; they hold
no science of their own.
"""
