"""The `segment` stage: lossless sentences, boundary scores and optimal blocks."""
