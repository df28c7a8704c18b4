"""Facial landmarks (MediaPipe face mesh and iris) and the signals active challenges use."""
