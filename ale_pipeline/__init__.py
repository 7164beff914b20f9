"""The ALE editing pipeline (ORE embeddings, RGB-CAM, background blending, Q/K injection on DDCM/LCM).

Empty for now: the pipeline is built on the ops in :mod:`ale_kernels` and the processors that come next.
"""
