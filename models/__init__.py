"""Pure PyTorch / numpy implementations of the FaceSnap and Diff-PC components.

Nothing in this package imports ComfyUI: the nodes, the trainer and the benchmarks all reuse it unchanged.
"""
