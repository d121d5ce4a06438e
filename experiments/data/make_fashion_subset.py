#!/usr/bin/env python3
"""Build the small Fashion-MNIST subsets shipped in experiments/data/fashion-mnist/.

Usage:
    python3 make_fashion_subset.py SRC_DIR OUT_DIR

SRC_DIR holds the four original Fashion-MNIST IDX files, either gzipped
(``*.gz``, as installed by the Debian package ``dataset-fashion-mnist`` under
/usr/share/datasets/fashion-mnist/) or uncompressed:

    train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]

OUT_DIR receives four uncompressed, standard IDX files:

    train-10k-images-idx3-ubyte   first 10000 training images (magic 0x00000803, dims 10000x28x28)
    train-10k-labels-idx1-ubyte   first 10000 training labels (magic 0x00000801, dim 10000)
    val-2k-images-idx3-ubyte      first 2000 t10k (test) images (magic 0x00000803, dims 2000x28x28)
    val-2k-labels-idx1-ubyte      first 2000 t10k (test) labels (magic 0x00000801, dim 2000)

IDX format: a big-endian u32 magic (0x00000800 | ndim, element type 0x08 =
unsigned byte), then ndim big-endian u32 dimension sizes, then the raw data in
row-major order. Images are 28x28 u8 pixels (0 = background); labels are u8 in
0..=9. The subsets are plain prefixes: no shuffling, no conversion of values.

Only the Python standard library is used; the output is byte-for-byte
deterministic for a given input.
"""

import gzip
import os
import struct
import sys

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# (source stem, output name, kind, count)
JOBS = [
    ("train-images-idx3-ubyte", "train-10k-images-idx3-ubyte", "images", 10000),
    ("train-labels-idx1-ubyte", "train-10k-labels-idx1-ubyte", "labels", 10000),
    ("t10k-images-idx3-ubyte", "val-2k-images-idx3-ubyte", "images", 2000),
    ("t10k-labels-idx1-ubyte", "val-2k-labels-idx1-ubyte", "labels", 2000),
]


def read_source(src_dir, stem):
    """Return the bytes of SRC_DIR/stem, reading stem.gz if that is what exists."""
    plain = os.path.join(src_dir, stem)
    if os.path.exists(plain):
        with open(plain, "rb") as f:
            return f.read()
    with gzip.open(plain + ".gz", "rb") as f:
        return f.read()


def parse_idx(data, expected_magic):
    """Parse an IDX blob; return (dims, payload) after checking magic and length."""
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise ValueError(f"bad magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    payload = data[4 + 4 * ndim :]
    size = 1
    for d in dims:
        size *= d
    if len(payload) != size:
        raise ValueError(f"payload is {len(payload)} bytes, header says {size}")
    return dims, payload


def build(src_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for stem, out_name, kind, count in JOBS:
        magic = IMAGES_MAGIC if kind == "images" else LABELS_MAGIC
        dims, payload = parse_idx(read_source(src_dir, stem), magic)
        if count > dims[0]:
            raise ValueError(f"{stem} has only {dims[0]} items, need {count}")
        item = 1
        for d in dims[1:]:
            item *= d
        if kind == "images" and tuple(dims[1:]) != (28, 28):
            raise ValueError(f"{stem}: unexpected image dims {dims[1:]}")
        new_dims = (count,) + tuple(dims[1:])
        header = struct.pack(">I" + "I" * len(new_dims), magic, *new_dims)
        body = payload[: count * item]
        out_path = os.path.join(out_dir, out_name)
        with open(out_path, "wb") as f:
            f.write(header + body)
        verify(out_path, magic, new_dims)
        print(f"{out_name}: dims={new_dims} bytes={len(header) + len(body)}")


def verify(path, magic, dims):
    """Re-read a written file and check its header and total size."""
    with open(path, "rb") as f:
        data = f.read()
    got_dims, payload = parse_idx(data, magic)
    if tuple(got_dims) != tuple(dims):
        raise ValueError(f"{path}: dims {got_dims} != {dims}")
    if magic == LABELS_MAGIC and max(payload) > 9:
        raise ValueError(f"{path}: label out of range 0..9")


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    build(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
