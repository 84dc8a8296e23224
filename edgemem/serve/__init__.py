"""Serving edgemem graphs to many streams with NVIDIA Triton Inference Server.

- ``graphs``: what a graph asks of a server, read from its contract metadata and I/O alone;
- ``repository``: a Triton model repository from graphs (``edgemem serve export``);
- ``server``: a local ``tritonserver`` on a repository (``edgemem serve start``);
- ``client``: remote steps, one Triton sequence per stream (``RemoteSession``);
- ``remote_stream``: ``edgemem stream --triton``, many sources at once;
- ``bench``: latency, throughput and batch formation under concurrency (``edgemem serve bench``).
"""
