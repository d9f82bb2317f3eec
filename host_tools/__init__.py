"""Host-side tools (TensorFlow): FER2013 -> trained, evaluated, exported model bundle."""
