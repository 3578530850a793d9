"""The seeds' PyTorch reference VAE (pytorch/examples `vae/main.py`), on the same MNIST bytes.

784-400-20 MLP, ReLU, Bernoulli (BCE on sigmoid outputs, summed), Adam 1e-3, batch 128, shuffled
each epoch, no binarization. torchvision has no CPU build here, so the data come from the IDX files
through a `TensorDataset` held in memory (faster than the original's per-image PIL transform, i.e.
a stronger baseline).
"""

import time

import numpy as np


def run(manual_dir: str, epochs: int = 10, batch_size: int = 128, seed: int = 0) -> dict:
  """Trains the reference model and returns its test loss and training throughput."""
  import torch
  from torch import nn
  from torch.nn import functional as F
  from torch.utils.data import DataLoader, TensorDataset

  from benchmarks.mnist_idx import load_mnist

  torch.manual_seed(seed)
  data = load_mnist(manual_dir)
  to_tensor = lambda a: torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
  train = DataLoader(TensorDataset(to_tensor(data["train_images"])), batch_size, shuffle=True)
  test = DataLoader(TensorDataset(to_tensor(data["test_images"])), 1000)

  class VAE(nn.Module):
    def __init__(self):
      super().__init__()
      self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
      self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
      h = F.relu(self.fc1(x))
      mu, logvar = self.fc21(h), self.fc22(h)
      z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
      return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

  def loss_fn(recon, x, mu, logvar):
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

  model = VAE()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  train_time, examples = 0.0, 0
  for _ in range(epochs):
    model.train()
    start = time.perf_counter()
    for (x,) in train:
      opt.zero_grad()
      loss = loss_fn(*_fwd(model, x))
      loss.backward()
      opt.step()
      examples += len(x)
    train_time += time.perf_counter() - start
  model.eval()
  with torch.no_grad():
    test_loss = sum(loss_fn(*_fwd(model, x)).item() for (x,) in test) / len(test.dataset)
  return {
    "test_neg_elbo": test_loss,
    "train_examples_per_sec": examples / train_time,
    "epoch_sec": train_time / epochs,
    "threads": torch.get_num_threads(),
  }


def _fwd(model, x):
  recon, mu, logvar = model(x)
  return recon, x, mu, logvar
