"""Serving: drive runtime sessions over video sources, locally or on NVIDIA Triton Inference Server.

Local streaming (``edgemem stream``):

- ``stream``: the streaming loop over sources, clip by clip with the state carried, exit statuses;
- ``stream_commands``: the ``edgemem stream`` command;
- ``annotate``: an annotated copy of each video (``--out``); ``live``: the live terminal view.

Many streams on Triton:

- ``graphs``: what a graph asks of a server, read from its contract metadata and I/O alone;
- ``repository``: a Triton model repository from graphs (``edgemem serve export``);
- ``server``: a local ``tritonserver`` on a repository (``edgemem serve start``);
- ``client``: remote steps, one Triton sequence per stream (``RemoteSession``);
- ``remote_stream``: ``edgemem stream --triton``, many sources at once;
- ``bench``: latency, throughput and batch formation under concurrency (``edgemem serve bench``).
"""
