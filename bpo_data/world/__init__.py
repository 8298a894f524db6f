"""The miniature world: synthetic scenes where BPO can be watched working on a laptop.

``params`` fixes the world (classes, colours, co-occurring pairs, typical colours); ``scenes``
samples scene graphs and draws them; ``language`` writes captions, sign questions and
conversations from a scene graph; ``make`` writes a world folder (the three sources in their real
formats, held-out and prior-violating splits, an Object-HalBench-style set); ``vision`` and
``train`` train the tiny LLaVA that ships in ``world/model``; ``evaluate`` measures it (CHAIR,
QA accuracy, the language prior); ``cli`` is ``bpo-data world …``.
"""
