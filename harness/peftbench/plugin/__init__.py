"""The plugin contract: registries, the Method/Task/Model interfaces, the metric registry, and the
helpers a plugin may use (quantization, GGUF conversion, pooling).
Plugins import only this layer."""
