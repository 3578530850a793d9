"""The seeds' PyTorch reference VAE (pytorch/examples `vae/main.py`), on the same MNIST bytes.

784-400-20 MLP, ReLU, Bernoulli (BCE on sigmoid outputs, summed), Adam 1e-3, batch 128, shuffled
each epoch, no binarization. torchvision has no CPU build here, so the data come from the same IDX
files in one of two ways:

* `pipeline="pil"` (the reference as written): each item goes through `PIL.Image.fromarray` and
  `transforms.ToTensor()`'s conversion, then the default collate, as `torchvision.datasets.MNIST`
  does;
* `pipeline="tensor"` (a stronger baseline): one in-memory `TensorDataset`, no per-item work.
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
  data = load_mnist(manual_dir)
  if pipeline == "pil":
    train_set = _pil_dataset(data["train_images"])
  else:
    flat = data["train_images"].reshape(-1, 784).astype(np.float32) / 255.0
    train_set = TensorDataset(torch.from_numpy(flat))
  train = DataLoader(train_set, batch_size, shuffle=True)
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
    "pipeline": pipeline,
  }


def _fwd(model, x):
  recon, mu, logvar = model(x)
  return recon, x, mu, logvar
