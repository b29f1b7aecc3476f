"""Development helpers shared by the tests, the scripts and the benchmarks (never imported by the nodes):
an in-process ComfyUI executor and a server process, the example photos and model stand-ins, the workflow
format converter, and generated stand-ins (antelopev2-signature ONNX models, synthetic training shards)."""
