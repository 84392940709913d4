"""audiokd: distil audio-spectrogram transformers into mobile students, tracked with DVC and MLflow."""

__version__ = "0.1.0"
