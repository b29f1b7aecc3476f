"""Identity: the Facial Attribute Mixer, FFRNet, the Diff-PC ID-Injector, reference features and weight files."""
