"""One run: spec → trained model → result record (data, device, precision, training, measurement,
generation, forgetting, artifacts, several processes)."""
