"""The trainer worker: window read-back, training, evaluation gate, registry, model versions."""
