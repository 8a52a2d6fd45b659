"""Ray and storage around the codec: list images via fsspec, compress shards on actors, write Parquet.

Imports bitswap_core; bitswap_core never imports this package.
"""
