"""The run infrastructure: the command line, run directories, sweeps, SLURM and the config
checks studies declare their fields with.

It sits above the method (sites, tasks, inference, metrics), which never imports it; a study's
``run(ctx)`` receives a :class:`bablate.runner.context.RunContext`."""
