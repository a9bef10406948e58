"""peftbench's own models, registered through the ``peftbench.models`` entry points."""
