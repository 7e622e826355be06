"""ccpipe: a CCNet/LLaMA-style Common Crawl pipeline."""

__version__ = "0.1.0"
