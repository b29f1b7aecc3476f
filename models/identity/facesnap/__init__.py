"""FaceSnap: the Facial Attribute Mixer and its face features, FFRNet (an SDXL ControlNet reading the mixer's tokens)
with Diff-PC's ID-Injector heads, and FaceSnap's weight files."""
