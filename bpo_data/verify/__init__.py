"""Verified negatives: measured evidence that a pair's rejected answer contradicts its image.

- ``objects``: COCO objects added / removed by the rejected answer (Object HalBench's reader);
- ``clip``: open-clip image–text similarity of each answer (sentence by sentence), any open-clip model;
- ``evidence``: the per-pair record and its published columns; ``filters``: thresholds on it;
- ``card_stats``: the evidence distributions (and figure) the dataset card shows;
- ``step``: the shard pipeline's ``Verify`` step; ``folder``: ``bpo-data verify DIR`` for existing shards;
- ``world_verifier``: the tiny open-clip model trained on the miniature world (shipped in ``world_clip/``);
- ``world_truth``: whether an answer truly contradicts a world picture, from its scene graph.
"""
