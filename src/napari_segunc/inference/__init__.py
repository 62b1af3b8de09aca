"""Model inference: nnU-Net v2 ensembles (streamed into the uncertainty accumulator) and the demo ensemble."""
