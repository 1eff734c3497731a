"""Load benchmarks of Nestor against bare aiohttp and its peers: run `python -m bench.run`."""
