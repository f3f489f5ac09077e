"""fmnist: train, compare, explain and serve Fashion-MNIST classifiers."""
__version__ = "0.1.0"
