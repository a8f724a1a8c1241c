"""One worker across several devices: a process group whose ranks split each denoising step (CFG,
Ulysses and ring sequence parallelism) and share the decode. ``layout`` and ``failure`` are torch-free."""
