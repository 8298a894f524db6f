"""Error injection: the ground truth rewritten with plausible, common but wrong details.

``prompt_files`` are the prompts as data, ``cleaning`` strips the chatter models wrap a rewrite in,
``validation`` decides whether a rewrite can be a rejected answer, ``error_types`` reads what a
rewrite changed, ``llm`` asks a language model, ``rules`` needs none, and ``negatives`` turns
units into rejected answers with either.
"""
