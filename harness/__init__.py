"""GeRe harness: measure how fine-tuning erodes what a causal LM knows, and which
anti-forgetting methods hold up. See README.md."""

__version__ = "0.1.0"
