import logging
import os
import sys
from pathlib import Path

# Tests import their fixtures module by name; the models load offline.
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
