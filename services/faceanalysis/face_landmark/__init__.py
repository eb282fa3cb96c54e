"""face-landmark: face detection, dlib's 68 landmarks and eye-aligned crops."""
