"""Editing (method §6, §7): everything that changes what the samplers make, around one sampling core.

  image        harmonization, style transfer from a picture, ROI-guided generation   (method §7)
  regions      boxes in finest-scale pixels and the ROI x̂0 hooks                     (method §7.3)
  masks        the harmonization soft mask and the mask-picture rule                  (method §7.1)
  text         the four text-guided modes                                             (method §6.7)
  guidance     CLIP loss and gradient, the fill-factor mask, the guided loops         (method §6)
  clip         CLIP weights: open_clip models, OpenAI checkpoints, offline loading
  clip_views   the augmented views CLIP sees of x̂0                                    (method §6.3)
"""
