"""face-attributes: age, gender and emotion with DeepFace's models on ONNX Runtime."""
