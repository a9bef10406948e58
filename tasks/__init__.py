"""peftbench's own tasks, registered through the ``peftbench.tasks`` entry points."""
