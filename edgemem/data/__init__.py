"""Video data: PyAV decoding, clip samplers, datasets, the synthetic long-range task."""
