"""PuLID (Guo et al. 2024) and EcomID: the EVA02-CLIP-L-14-336 vision tower PuLID's identity encoder reads, its
weight file, and PuLID's face input (the aligned face, background whited out, in grey)."""
