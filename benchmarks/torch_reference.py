"""The seeds' PyTorch reference VAE (pytorch/examples `vae/main.py`), on the same MNIST bytes.

784-400-20 MLP, ReLU, Bernoulli (BCE on sigmoid outputs, summed), Adam 1e-3, batch 128, shuffled
each epoch, no binarization. torchvision has no CPU build here, so the data come from the same IDX
files in one of two ways:

* `pipeline="pil"` (the reference as written): each item goes through `PIL.Image.fromarray` and
  `transforms.ToTensor()`'s conversion, then the default collate, as `torchvision.datasets.MNIST`
  does;
* `pipeline="tensor"` (a stronger baseline): one in-memory `TensorDataset`, no per-item work; on a
  CUDA machine the images live on the GPU and each epoch's shuffled batches are sliced there (a
  `DataLoader` over GPU tensors would gather item by item).

The model trains on the GPU where PyTorch sees one, else on the CPU.
"""

import time

import numpy as np


def _pil_dataset(images: np.ndarray):
  """Items as torchvision's MNIST + ToTensor() produce them: PIL image -> [1, 28, 28] float."""
  import torch
  from PIL import Image

  class PILMnist(torch.utils.data.Dataset):
    def __len__(self):
      return len(images)

    def __getitem__(self, i):
      pic = Image.fromarray(images[i], mode="L")
      t = torch.from_numpy(np.array(pic, np.uint8, copy=True)).view(28, 28, 1)
      return (t.permute(2, 0, 1).contiguous().float().div(255),)

  return PILMnist()


def run(
  manual_dir: str, epochs: int = 10, batch_size: int = 128, seed: int = 0, pipeline: str = "pil"
) -> dict:
  """Trains the reference model and returns its test loss and training throughput."""
  import torch
  from torch import nn
  from torch.nn import functional as F
  from torch.utils.data import DataLoader, TensorDataset

  from benchmarks.mnist_idx import load_mnist

  torch.manual_seed(seed)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  data = load_mnist(manual_dir)
  if pipeline == "pil":
    train = DataLoader(_pil_dataset(data["train_images"]), batch_size, shuffle=True)
  else:
    flat = data["train_images"].reshape(-1, 784).astype(np.float32) / 255.0
    if device.type == "cpu":
      train = DataLoader(TensorDataset(torch.from_numpy(flat)), batch_size, shuffle=True)
    else:
      train = _DeviceBatches(flat, batch_size, device)
  test = DataLoader(_pil_dataset(data["test_images"]), 1000)

  class VAE(nn.Module):
    def __init__(self):
      super().__init__()
      self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
      self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
      h = F.relu(self.fc1(x.view(-1, 784)))
      mu, logvar = self.fc21(h), self.fc22(h)
      z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
      return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

  def loss_fn(recon, x, mu, logvar):
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

  model = VAE().to(device)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  train_time, examples = 0.0, 0
  for _ in range(epochs):
    model.train()
    start = time.perf_counter()
    for (x,) in train:
      x = x.to(device, non_blocking=True)
      opt.zero_grad()
      loss = loss_fn(*_fwd(model, x))
      loss.backward()
      opt.step()
      examples += len(x)
    if device.type == "cuda":
      torch.cuda.synchronize()
    train_time += time.perf_counter() - start
  model.eval()
  with torch.no_grad():
    test_loss = sum(loss_fn(*_fwd(model, x.to(device))).item() for (x,) in test)
    test_loss /= len(test.dataset)
  return {
    "test_neg_elbo": test_loss,
    "train_examples_per_sec": examples / train_time,
    "epoch_sec": train_time / epochs,
    "threads": torch.get_num_threads(),
    "pipeline": pipeline,
    "device": device.type,
  }


class _DeviceBatches:
  """Shuffled batches of the flattened [N, 784] training set held on `device`, sliced there."""

  def __init__(self, flat: np.ndarray, batch_size: int, device):
    import torch

    self.data, self.batch_size, self.device = torch.from_numpy(flat).to(device), batch_size, device

  def __iter__(self):
    import torch

    perm = torch.randperm(len(self.data), device=self.device)
    for start in range(0, len(self.data), self.batch_size):
      yield (self.data[perm[start : start + self.batch_size]],)


def _fwd(model, x):
  recon, mu, logvar = model(x)
  return recon, x, mu, logvar
