"""The values some options take, in a module that imports nothing: the library checks them and `fmnist --help`
lists them without loading PyTorch."""

PREPROCESS = ("dataset", "fit", "none")  # how a picture becomes 28x28 (fmnist.predict.prepare)
EXPLAIN_METHODS = ("auto", "gradcam", "integrated_gradients")  # saliency methods (fmnist.explain.saliency)
