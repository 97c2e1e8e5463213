"""Mementos for segmented traces: the LLM recipe (compress, judge, refine) and the offline annotator.

* `recipe`: the per-trace flow through an LLM engine; `prompting`: its messages; `parsing`: reading
  the answers; `extractive`: the deterministic annotator; `stage`: both on shards; `accounting`: what a
  run did and spent.
"""
