"""Engine backends behind one protocol: tensorrt, tensorrt-rtx, onnxruntime."""
