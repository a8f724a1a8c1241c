"""The micro model: a synthetic world, its captions, training and an adherence evaluator.

Training only; serving loads the result through ``reelserve.models`` and never imports this.
"""
