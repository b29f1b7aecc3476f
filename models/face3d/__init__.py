"""3D face: morphable models (ICT-FaceKit, FLAME), landmark fitting, the Landmark Predictor, the rasterizer,
FLAME articulation, the optional DECA encoder and the ICT-FaceKit download."""
