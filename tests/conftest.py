import torch

# The tests use tiny models: on a small shared machine one intra-op thread is much faster than several
# (measured up to ~100x on 2 oversubscribed cores), and results do not depend on it.
torch.set_num_threads(1)
