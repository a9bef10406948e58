"""peftbench's own methods, registered through the ``peftbench.methods`` entry points."""
