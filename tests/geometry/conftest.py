import logging
import os
import sys
from pathlib import Path

# Tests import their fixtures module by name; the models load offline.
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import torch  # noqa: E402

# The tests run tiny tensors; on a shared 2-core machine torch's OpenMP workers spin-wait
# against other processes and one small training test went from 2 s to 85 s. One thread
# makes the suite's runtime independent of the machine's load.
torch.set_num_threads(1)
